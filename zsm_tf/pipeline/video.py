"""One video upscale, start to finish: the library behind ``zsm-tf upscale``.

    with VideoJob(input, output, fps_mode="double") as job:   # checks and scans the input
        model = load_model(weights)                              # only then the model
        result = job.run(SpaceTimeUpscaler(model), model, weights)   # resumable, atomic output

:class:`VideoJob` opens the input (a video or an image folder), refuses an output it cannot or
must not write, decodes the input once (frame count, timestamps, rotation, colour, damage) and
decides the output's timing and audio before any model work; :meth:`VideoJob.run` upscales in
committed segments (the loop: :mod:`zsm_tf.pipeline.loop`; resuming:
:mod:`zsm_tf.pipeline.resume`; what identifies the job: :class:`~zsm_tf.pipeline.job.JobIdentity`)
and publishes the output whole. Frames flow one way: source ->
:class:`~zsm_tf.inference.SpaceTimeUpscaler` -> segment encoder -> output. Problems the user can
fix raise :class:`~zsm_tf.io.MediaError` (:class:`~zsm_tf.pipeline.job.JobSettingError` when one
of the job's settings answers it); bars and notes go to ``progress``
(:class:`zsm_tf.progress.Progress`).
"""
from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional

from zsm_tf import interrupts
from zsm_tf import io as vio
from zsm_tf.pipeline import job
from zsm_tf.pipeline.job import JobIdentity, JobSettingError, Said
from zsm_tf.pipeline.loop import produce
from zsm_tf.pipeline.resume import (
    DEFAULT_SEGMENT_FRAMES,
    DEFAULT_SEGMENT_SECONDS,
    ResumableOutput,
    check_unlocked,
    plan_segments,
)
from zsm_tf.pipeline.timing import output_timing
from zsm_tf.progress import SILENT, Progress


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
    audio: bool             # the input's audio is in the output
    damage: Optional[str] = None   # why the input stopped early (only the frames before were upscaled)
    audio_codec: Optional[str] = None   # what the audio was re-encoded to ("AAC", "Opus"); None: copied


def _size(n: float) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{int(n)} bytes"


def disk_full(e: BaseException) -> bool:
    """``e`` (or what caused it) is "no space left on device" or "disk quota exceeded"."""
    seen = 0
    while e is not None and seen < 5:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


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
      segment_seconds: and at the first model window after S seconds (None: by frames only).
      progress: a :class:`zsm_tf.progress.Progress` for the scan's and the upscale's progress
        and the notes to the user (default: silent).
    Raises:
      JobSettingError (a ``MediaError`` and ``ValueError``) naming the setting that answers it;
      MediaError for what the input or output cannot do.
    """

    def __init__(self, input, output, fps=None, fps_mode="double", crf=18, overwrite=False,
                 strict=False, resume=True, segment_frames=DEFAULT_SEGMENT_FRAMES,
                 segment_seconds=DEFAULT_SEGMENT_SECONDS, progress: Progress = SILENT):
        if fps is not None and fps <= 0:
            raise JobSettingError("{setting} must be positive, got {fps}", "fps", fps=fps)
        if segment_frames < 1:
            raise JobSettingError("{setting} must be at least 1, got {n}", "segment_frames", n=segment_frames)
        if vio.is_video_path(output):
            top = 63 if vio.container_of(output) == "webm" else 51   # VP9 / x264 CRF scales
            if not 0 <= crf <= top:
                raise JobSettingError("{setting} must be in 0..{top} for {ext} output (lower is better; "
                                      "default 18), got {crf}", "crf", top=top,
                                      ext=Path(str(output)).suffix, crf=crf)
        self.input, self.output = input, output
        self.fps, self.fps_mode, self.crf, self.resume = fps, fps_mode, crf, resume
        self.segment_frames, self.progress, self.note = segment_frames, progress, progress.note
        self.segment_seconds = segment_seconds
        self._space_checked = False
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
        check_unlocked(self.output)   # another run writing this output: refused before the scan
        self.facts = facts = job.inspect_input(self.src, self.progress)   # before any work
        n_in = facts.num_frames
        if n_in < 2:
            why = f" ({facts.damage})" if facts.damage else ""
            raise vio.MediaError(f"{self.input}: has {n_in} frame{'s' if n_in != 1 else ''}; "
                                 f"need at least 2 to interpolate{why}")
        if facts.damage and strict:
            raise JobSettingError("{damage}; nothing written ({setting})", "strict", damage=facts.damage)
        if facts.damage:
            self.note(f"{facts.damage}: upscaling the {n_in} frames before it, then exiting with an error")
        if facts.alpha:
            self.note("the input frames have an alpha channel (transparency): it is dropped, the "
                      "output is RGB")
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

    def identity(self, upscaler, model=None, weights_path=None) -> JobIdentity:
        """What a rerun must match to resume this job with ``upscaler`` (``model``, from
        ``weights_path``): see :class:`~zsm_tf.pipeline.job.JobIdentity`."""
        settings = {"fps": self.fps, "fps_mode": self.fps_mode, "crf": self.crf if self.is_video else None,
                    "segment_frames": self.segment_frames, **job.upscaler_settings(upscaler)}
        return JobIdentity.of(self.input, self.output, self.facts.num_frames, settings, model, weights_path)

    def run(self, upscaler, model=None, weights_path=None) -> VideoResult:
        """Upscales the input with ``upscaler`` (a :class:`~zsm_tf.inference.SpaceTimeUpscaler`)
        and publishes the output. ``model`` (the upscaler's) and ``weights_path`` (where it was
        loaded from) are part of the job's identity (:meth:`identity`): a rerun resumes only the
        same job."""
        info, facts, timing = self.src.info, self.facts, self.timing
        upscaler.plan(info.height, info.width)   # a job that cannot fit the memory stops here
        n_in = facts.num_frames
        identity = self.identity(upscaler, model, weights_path)
        try:
            work = ResumableOutput(self.output, identity, video=self.is_video, resume=self.resume,
                                   progress=self.progress)
        except OSError as e:
            if disk_full(e):
                raise vio.MediaError(f"{job.output_path(self.output).parent}: disk full; nothing was "
                                     f"written: free space and run the same command again") from None
            raise
        w, h = info.width * 4, info.height * 4
        plan = plan_segments(n_in, upscaler.window, self.segment_frames)
        total = plan[-1].end
        fmt = vio.container_format(self.output) if self.is_video else None

        def encoder(seg):
            from zsm_tf.io.segments import SegmentEncoder

            return SegmentEncoder(work.segment_path(seg), fmt, w, h, timing.rate, timing.time_base,
                                  crf=self.crf, colour=facts.colour)

        units = plan_segments(n_in, upscaler.window, 1)   # where a segment may end early (by time)
        notes = []
        try:
            with job.sigterm_as_interrupt():
                self.progress.start(total, "frame", "upscale", done=work.done_frames)
                try:
                    for _ in produce(work, plan, upscaler, self.src, n_in, timing, encoder, self.progress,
                                     units=units, commit_s=self.segment_seconds):
                        self._check_space(work, total)
                finally:
                    self.progress.close()
                if self.is_video:
                    starts = {u.start: timing.seconds(u.start) for u in units}
                    # the last frame shows for a whole input frame: the video ends with its input
                    last = timing.seconds(total - 1) - timing.seconds(total - 3) if total >= 3 else None
                    notes = work.publish_video(starts, fmt, rotation=facts.rotation, streams_from=self.audio,
                                               last_frame_s=last)
                else:
                    work.publish_frames()
        except BaseException as e:
            from zsm_tf.loading import ModelLoadError

            if isinstance(e, KeyboardInterrupt):
                interrupts.acknowledge()   # caught: the clean-up below runs, no watchdog exit
            keep = bool(work.done) and not isinstance(e, ModelLoadError)
            kept = f"{work.done_frames} of {total} output frames are kept in {work.path}"
            full = disk_full(e)
            if keep:
                work.release()
            else:
                work.remove()
            if full:
                need = self._space_text(work, total)
                raise vio.MediaError(
                    f"{work.path.parent}: disk full; "
                    + (f"{kept}: free space and run the same command again to resume{need}" if keep else
                       f"nothing was kept; free space and run the same command again{need}")) from None
            if keep:
                e.resume_hint = Said("{kept}: run the same command again to resume ({setting} starts "
                                     "afresh)", ["resume"], kept=kept)
            raise
        for n in notes:
            self.note(n)
        return VideoResult(output=str(self.output), frames=total, width=w, height=h, rate=timing.rate,
                           cfr=timing.cfr, video=self.is_video, audio=bool(self.audio), damage=facts.damage,
                           audio_codec=vio.audio.audio_reencode(info.audio_codec, fmt) if self.audio else None)

    def _space_text(self, work, total) -> str:
        per = work.bytes_per_frame()
        if not per:
            return ""
        need = per * (total - work.done_frames) + (per * total if self.is_video else 0)
        return f" (about {_size(need)} more needed: {_size(per)} per output frame)"

    def _check_space(self, work, total) -> None:
        """After the first segment this run commits: a note when the rest will not fit the disk."""
        if self._space_checked:
            return
        self._space_checked = True
        per = work.bytes_per_frame()
        if not per:
            return
        left = total - work.done_frames
        need = per * left + (per * total if self.is_video else 0)   # a video is joined into a copy
        free = shutil.disk_usage(work.path).free
        if need > free:
            self.note(f"the output needs about {_size(need)} more ({_size(per)} per output frame"
                      f"{', twice for the final join' if self.is_video else ''}) but only {_size(free)} "
                      f"is free beside {self.output}: the job will stop when the disk is full, keeping "
                      f"what it finished")

    def close(self) -> None:
        self.src.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
