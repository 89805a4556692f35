"""The loop of a video job: input frames -> :class:`~zsm_tf.inference.SpaceTimeUpscaler` ->
segment encoder (or PNG frames) -> committed segments of a
:class:`~zsm_tf.pipeline.resume.ResumableOutput`, from the first one not committed yet."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Iterator, List, Optional

from zsm_tf.io import MediaError
from zsm_tf.io.images import write_png
from zsm_tf.pipeline.job import JobSettingError
from zsm_tf.pipeline.resume import ResumableOutput, Segment
from zsm_tf.progress import SILENT, Progress, StatusOnly


def produce(work: ResumableOutput, plan: List[Segment], upscaler, source, num_inputs: int,
            timing=None, make_encoder=None, progress: Progress = SILENT,
            units: Optional[List[Segment]] = None, commit_s: Optional[float] = None,
            clock: Callable[[], float] = time.monotonic) -> Iterator[Segment]:
    """Upscales the output frames that ``work`` has not committed yet, committing segments;
    yields each segment once it is committed.

    A segment is committed at each end of a segment of ``plan`` (about ``segment_frames``
    outputs) and also, once ``commit_s`` seconds have passed since it started, at the next end
    of one of ``units`` (one model window each: ``plan_segments(K, N, 1)``), so that a slow job
    loses at most a few minutes. ``source.frames(start, stop)`` gives input frames;
    ``upscaler.stream(frames)`` the outputs; ``timing.pts(g)`` output ``g``'s timestamp;
    ``make_encoder(seg)`` a :class:`SegmentEncoder` for a video segment (None: PNG frames).
    ``progress`` advances by one after each output frame written (resumed frames are not counted
    again) and is described by the upscaler (e.g. while it traces the model)."""
    units = units or plan
    total = plan[-1].end
    done = work.done_frames
    if done >= total:
        return
    k = next((i for i, u in enumerate(units) if u.start == done), None)
    if k is None:
        raise JobSettingError("{path}: its committed segments do not end on a model window; "
                              "rerun with {setting}", "resume", path=work.path)
    bounds = {s.end for s in plan}
    unit_ends = {u.end for u in units}

    def segment(index, start):
        return Segment(index, start, min((b for b in bounds if b > start), default=total), units[k].feed)

    frames = source.frames(units[k].feed, num_inputs)
    g = 2 * units[k].feed
    seg = segment(len(work.done), done)
    t0 = clock()
    enc = make_encoder(seg) if work.video else None
    try:
        for out in upscaler.stream(frames, progress=StatusOnly(progress)):
            if g < seg.start:
                g += 1
                continue
            if enc is not None:
                enc.write(out, timing.pts(g) - timing.pts(seg.start))
            else:
                write_png(work.frame_path(g), out)
            g += 1
            progress.advance(1)
            if g in bounds or (g in unit_ends and commit_s is not None and clock() - t0 >= commit_s):
                seg = replace(seg, end=g)
                work.commit(seg, enc.finish() if enc is not None else None)
                enc = None
                yield seg
                if g >= total:
                    break
                seg, t0 = segment(seg.index + 1, g), clock()
                enc = make_encoder(seg) if work.video else None
    finally:
        if enc is not None:
            enc.abort()
    if g < total:
        raise MediaError(f"{source.info.path}: the input gave fewer frames than it did when scanned "
                         f"(output stopped at frame {g} of {total})")
