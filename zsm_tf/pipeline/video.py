"""One video upscale, start to finish: the library behind ``zsm-tf upscale``.

    with VideoJob(input, output, fps_mode="double") as job:   # checks and scans the input
        upscaler = SpaceTimeUpscaler(load_model(...))           # only then the model
        result = job.run(upscaler, flags={...})                 # resumable, atomic output

:class:`VideoJob` opens the input (a video or an image folder), refuses an output it cannot or
must not write, decodes the input once (frame count, timestamps, rotation, colour, damage) and
decides the output's timing and audio before any model work; :meth:`VideoJob.run` upscales in
committed segments (:mod:`zsm_tf.pipeline.resume`) and publishes the output whole. Frames flow
one way: source -> :class:`~zsm_tf.inference.SpaceTimeUpscaler` -> segment encoder -> output.
Problems the user can fix raise :class:`~zsm_tf.io.MediaError`; notes for the user go to ``note``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Optional

from zsm_tf import io as vio
from zsm_tf.pipeline import job
from zsm_tf.pipeline.resume import DEFAULT_SEGMENT_FRAMES, ResumableOutput, plan_segments, produce
from zsm_tf.pipeline.timing import output_timing


@dataclass
class VideoResult:
    """What :meth:`VideoJob.run` wrote."""
    output: str
    frames: int             # output frames
    width: int
    height: int
    rate: Fraction          # frames per second (nominal when ``cfr`` is False)
    cfr: bool
    video: bool             # a video file (else a folder of PNG frames)
    audio: bool             # the input's audio was copied
    damage: Optional[str]   # why the input stopped early (only the frames before were upscaled)


class VideoJob:
    """``input`` (video file or image folder) -> ``output`` (video file, or PNG folder), 4x size.

    Args:
      fps: the input's frame rate (image folders: default 25) or an override of a video's.
      fps_mode: "double" (2x frame rate, same duration, audio kept) or "slowmo" (same rate).
      crf: x264 quality of video output.
      overwrite: replace an existing output (a folder whole).
      strict: refuse a damaged input stream (default: upscale the frames before the damage).
      resume: continue an interrupted run of the same job (False: start afresh).
      segment_frames: commit progress about every N output frames.
      progress: show progress bars on stderr.
      note: callable(str) for notes to the user.
    """

    def __init__(self, input, output, fps=None, fps_mode="double", crf=18, overwrite=False,
                 strict=False, resume=True, segment_frames=DEFAULT_SEGMENT_FRAMES, progress=True,
                 note: Callable[[str], None] = lambda msg: None):
        if fps is not None and fps <= 0:
            raise ValueError(f"--fps must be positive, got {fps}")
        if segment_frames < 1:
            raise ValueError(f"--segment-frames must be at least 1, got {segment_frames}")
        self.input, self.output = input, output
        self.fps_mode, self.crf, self.resume = fps_mode, crf, resume
        self.segment_frames, self.progress, self.note = segment_frames, progress, note
        self.src = vio.open_source(input, fps=fps)
        try:
            self._inspect(fps, overwrite, strict)
        except BaseException:
            self.src.close()
            raise

    def _inspect(self, fps, overwrite, strict):
        info = self.src.info
        vio.check_output_path(self.output, self.input)
        job.check_overwrite(self.output, overwrite)
        self.facts = facts = job.inspect_input(self.src, progress=self.progress)   # before any work
        n_in = facts.num_frames
        if n_in < 2:
            why = f" ({facts.damage})" if facts.damage else ""
            raise vio.MediaError(f"{self.input}: has {n_in} frame{'s' if n_in != 1 else ''}; "
                                 f"need at least 2 to interpolate{why}")
        if facts.damage and strict:
            raise vio.MediaError(f"{facts.damage}; nothing written (--strict)")
        if facts.damage:
            self.note(f"{facts.damage}: upscaling the {n_in} frames before it, then exiting with an error")
        self.is_video = is_video = vio.is_video_path(self.output)
        timing, tnote = output_timing(info.fps, self.fps_mode, None if fps is not None else facts.pts,
                                      facts.time_base)
        if is_video and not timing.cfr and vio.container_of(self.output) == "avi":
            timing, _ = output_timing(info.fps, self.fps_mode)
            tnote = (f"variable frame rate input, but AVI holds a constant rate only: written at "
                     f"{float(timing.rate):.3f} fps (use .mp4 or .mkv to keep the input's timing)")
        if tnote and is_video:
            self.note(tnote)
        self.timing = timing
        self.audio = None
        if info.has_audio:
            if self.fps_mode == "double" and is_video:
                self.audio = info.path
            elif self.fps_mode == "slowmo":
                self.note("audio dropped: in slowmo mode it would be out of sync")
            else:
                self.note("audio dropped: the output is a folder of frames")

    @property
    def num_inputs(self) -> int:
        return self.facts.num_frames

    def run(self, upscaler, flags=None, model=None, weights_path=None) -> VideoResult:
        """Upscales the input with ``upscaler`` (a :class:`~zsm_tf.inference.SpaceTimeUpscaler`)
        and publishes the output. ``flags`` (what changes the output), ``model`` and
        ``weights_path`` identify the job: a rerun resumes only the same job."""
        info, facts, timing = self.src.info, self.facts, self.timing
        upscaler.plan(info.height, info.width)   # a job that cannot fit the memory stops here
        n_in = facts.num_frames
        record = job.job_record(self.input, self.output, flags or {}, n_in, upscaler.window,
                                self.segment_frames, model, weights_path)
        work = ResumableOutput(self.output, record, video=self.is_video, resume=self.resume, note=self.note)
        w, h = info.width * 4, info.height * 4
        plan = plan_segments(n_in, upscaler.window, self.segment_frames)
        total = plan[-1].end
        fmt = vio.container_format(self.output) if self.is_video else None

        def encoder(seg):
            from zsm_tf.io.segments import SegmentEncoder

            return SegmentEncoder(work.segment_path(seg), fmt, w, h, timing.rate, timing.time_base,
                                  crf=self.crf, colour=facts.colour)

        from tqdm import tqdm

        notes = []
        try:
            with job.sigterm_as_interrupt():
                with tqdm(total=total, initial=work.done_frames, unit="frame", desc="upscale",
                          disable=not self.progress, dynamic_ncols=True, file=sys.stderr) as bar:
                    produce(work, plan, upscaler, self.src, n_in, timing, encoder, lambda: bar.update(1),
                            status=bar.set_description)
                if self.is_video:
                    starts = {s.index: timing.seconds(s.start) for s in plan}
                    notes = work.publish_video(starts, fmt, rotation=facts.rotation, streams_from=self.audio)
                else:
                    work.publish_frames()
        except BaseException as e:
            from zsm_tf.loading import ModelLoadError

            keep = bool(work.done) and not isinstance(e, (vio.MediaError, ModelLoadError, ValueError))
            if keep:
                e.resume_hint = (f"{work.done_frames} of {total} output frames are kept in {work.path}: "
                                 f"run the same command again to resume (--no-resume starts afresh)")
                work.release()
            else:
                work.remove()
            raise
        for n in notes:
            self.note(n)
        return VideoResult(output=str(self.output), frames=total, width=w, height=h, rate=timing.rate,
                           cfr=timing.cfr, video=self.is_video, audio=bool(self.audio), damage=facts.damage)

    def close(self) -> None:
        self.src.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
