"""Resuming: an upscale that is killed (Ctrl-C, SIGTERM, kill -9, a crash, a power cut)
continues where it stopped when the same job is run again. This module keeps the work folder;
the loop that fills it is :mod:`zsm_tf.pipeline.loop`, what identifies a job
:class:`zsm_tf.pipeline.job.JobIdentity`.

The output is produced in **segments** of consecutive output frames (:mod:`zsm_tf.io.segments`) in a
work folder beside the output, named after it so a rerun finds it: ``.OUT.zsm-work/`` holds the
finished segments (``seg_00000.mp4``... or, for PNG output, ``frames/``), a ``manifest.json`` and
a ``lock``. A segment is committed (file fsync'ed and renamed, then the manifest rewritten
atomically) before the next starts; a rerun keeps the committed segments, drops anything else,
and upscales from the first missing one. At the end the segments are joined by stream copy (or
the frames folder renamed) into OUT and the work folder is removed.

The manifest records the job's identity (:class:`~zsm_tf.pipeline.job.JobIdentity`). A rerun
whose identity differs starts afresh (with a note saying what changed), as does ``resume=False``.

**Same frames as an uninterrupted run.** Segments are whole model windows of
:func:`zsm_tf.inference.window_schedule` (the one window rule), each computed from its own frames
only: a segment starts where a window's new outputs start, and resuming feeds the input from that
window's first frame, so every window sees the same frames as in one run (the moved-back last
window included: fed alone, it is the whole clip of ``N`` frames, the same window).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from zsm_tf.io import MediaError
from zsm_tf.io.segments import fsync_dir, join_segments
from zsm_tf.pipeline.job import Said
from zsm_tf.progress import SILENT, Progress

WORK_SUFFIX = ".zsm-work"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 2   # 2: the job is a JobIdentity record
DEFAULT_SEGMENT_FRAMES = 48
DEFAULT_SEGMENT_SECONDS = 120.0   # a slow job also commits at the first window after this


class JobLockedError(MediaError):
    """Another process is writing the same output."""


# ---------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Segment:
    """Output frames ``[start, end)``; to produce them, feed input frames from ``feed`` and skip
    the first ``start - 2 * feed`` outputs."""
    index: int
    start: int
    end: int
    feed: int


def plan_segments(num_inputs: int, window: int, segment_frames: int = DEFAULT_SEGMENT_FRAMES) -> List[Segment]:
    """Segments of whole model windows (:func:`zsm_tf.inference.window_schedule`), about
    ``segment_frames`` output frames each: a segment is fed from its first window's start."""
    from zsm_tf.inference import window_schedule

    calls = window_schedule(num_inputs, window)
    begins = [2 * start + first for start, first in calls]   # each window's first new output
    ends = begins[1:] + [2 * num_inputs - 1]
    per = max(1, -(-segment_frames // (2 * (window - 1))))   # whole windows per segment
    return [Segment(i // per, begins[i], ends[min(i + per, len(calls)) - 1], calls[i][0])
            for i in range(0, len(calls), per)]


# ------------------------------------------------------------------------------------ work dir


def work_dir_for(output) -> Path:
    p = Path(str(output).rstrip("/" + os.sep) or str(output))
    return p.parent / f".{p.name}{WORK_SUFFIX}"


def check_unlocked(output) -> None:
    """:class:`JobLockedError` when another process holds the work folder of ``output``."""
    import fcntl

    lock = work_dir_for(output) / "lock"
    if not lock.is_file():
        return
    try:
        fd = os.open(str(lock), os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        raise JobLockedError(f"{output}: another zsm-tf upscale is writing this output (work folder "
                             f"{lock.parent} is locked)") from None
    finally:
        os.close(fd)


class ResumableOutput:
    """The work folder of one output: manifest, lock, committed segments; see the module docstring.

    Args:
      output: the final output path (a video file, or a folder for PNG frames).
      identity: the job's :class:`~zsm_tf.pipeline.job.JobIdentity`: a rerun resumes only when
        its record is equal.
      video: True for a video file (segments), False for a PNG folder.
      resume: False discards any earlier progress.
      progress: a :class:`zsm_tf.progress.Progress`, for its notes to the user.
    """

    def __init__(self, output, identity, video: bool, resume: bool = True, progress: Progress = SILENT):
        self.output = Path(str(output).rstrip("/" + os.sep) or str(output))
        self.path = work_dir_for(output)
        self.identity = identity
        self.job = identity.record
        self.video = video
        self.note = progress.note
        self.done: List[dict] = []
        self._lock_fd = None
        self._created = False
        try:
            self._start(resume)
        except OSError:   # e.g. a full disk: leave no half-made work folder
            if self._created and not self.done:
                self.remove()
            else:
                self.release()
            raise

    # -- setup
    def _start(self, resume):
        existed = self.path.exists()
        if existed and not self.path.is_dir():
            raise MediaError(f"{self.path} exists and is not a folder; remove it")
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as e:
            raise MediaError(f"{self.path}: cannot create the work folder ({e.strerror or e})") from None
        self._created = not existed
        self._lock()
        old = self._read() if existed else None
        if old is not None and resume and old.get("job") == self.job:
            self.done = self._valid(old.get("segments", []))
            if self.done:
                self.note(f"resuming: {self.done[-1]['end']} output frames already done in {self.path}")
        elif old is not None and not resume:
            self.note(Said("{setting}: discarding the earlier unfinished run in {path}", ["resume"],
                           path=self.path))
        elif old is not None:
            what = self.identity.differences(old.get("job") or {}) or ["format"]
            self.note(Said("an earlier unfinished run of this output differs ({settings}): starting "
                           "afresh", what))
        elif existed and any(p.name != "lock" for p in self.path.iterdir()):
            self.note(f"{self.path} has no readable manifest: starting afresh")
        self._clean()
        self._write()

    def _lock(self):
        import fcntl

        fd = os.open(str(self.path / "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise JobLockedError(f"{self.output}: another zsm-tf upscale is writing this output "
                                 f"(work folder {self.path} is locked)") from None
        self._lock_fd = fd

    def _read(self) -> Optional[dict]:
        try:
            data = json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            return None
        return data

    def _valid(self, segs) -> List[dict]:
        """The committed segments, in order from the first, whose files are intact."""
        good = []
        for i, s in enumerate(segs):
            if not isinstance(s, dict) or s.get("index") != i:
                break
            if self.video:
                f = self.path / str(s.get("file"))
                if not f.is_file() or f.stat().st_size != s.get("bytes"):
                    break
            else:
                frames = self.path / "frames"
                if not all((frames / frame_name(g)).is_file() for g in range(s["start"], s["end"])):
                    break
            good.append(s)
        return good

    def _clean(self):
        """Removes everything in the work folder that no committed segment owns."""
        keep = {"lock", MANIFEST} | {s["file"] for s in self.done if s.get("file")}
        done_end = self.done[-1]["end"] if self.done else 0
        for p in self.path.iterdir():
            if p.name in keep:
                continue
            if p.name == "frames" and not self.video and p.is_dir():
                for f in p.iterdir():
                    g = frame_index(f.name)
                    if g is None or g >= done_end:
                        f.unlink()
                continue
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        if not self.video:
            (self.path / "frames").mkdir(exist_ok=True)

    def _write(self):
        data = {"version": MANIFEST_VERSION, "job": self.job, "segments": self.done}
        tmp = self.path / (MANIFEST + ".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / MANIFEST)
        fsync_dir(self.path)

    # -- progress
    @property
    def done_frames(self) -> int:
        return self.done[-1]["end"] if self.done else 0

    def bytes_per_frame(self) -> float:
        """Mean size of a committed output frame on disk (0: nothing committed)."""
        n = self.done_frames
        if not n:
            return 0.0
        if self.video:
            size = sum(s.get("bytes") or 0 for s in self.done)
        else:
            size = sum(f.stat().st_size for f in (self.path / "frames").iterdir() if f.is_file())
        return size / n

    def segment_path(self, seg: Segment) -> Path:
        ext = ".avi" if self.output.suffix.lower() == ".avi" else ".mp4"   # segments.segment_format
        return self.path / f"seg_{seg.index:05d}{ext}"

    def frame_path(self, g: int) -> Path:
        return self.path / "frames" / frame_name(g)

    def commit(self, seg: Segment, nbytes: Optional[int] = None) -> None:
        rec = {"index": seg.index, "start": seg.start, "end": seg.end}
        if self.video:
            rec.update(file=self.segment_path(seg).name, bytes=nbytes)
        self.done.append(rec)
        self._write()

    # -- end
    def publish_video(self, segment_starts, out_format, rotation=0, streams_from=None,
                      last_frame_s=None) -> List[str]:
        """Joins the committed segments into the output (replacing it); returns notes.
        ``segment_starts``: output frame index -> its time in seconds."""
        tmp = self.path / ("joined" + self.output.suffix)
        segs = [(self.path / s["file"], segment_starts[s["start"]]) for s in self.done]
        try:
            notes = join_segments(segs, tmp, out_format, rotation=rotation, streams_from=streams_from,
                                  last_frame_s=last_frame_s)
        except BaseException:
            tmp.unlink(missing_ok=True)   # the segments stay: a rerun joins them again
            raise
        os.replace(tmp, self.output)
        fsync_dir(self.output.parent)
        self.remove()
        return notes

    def publish_frames(self) -> None:
        """Moves the frames folder to the output (an existing output folder is replaced whole)."""
        frames = self.path / "frames"
        if self.output.exists():
            old = self.path / "replaced"
            os.rename(self.output, old)
        os.rename(frames, self.output)
        fsync_dir(self.output.parent)
        self.remove()

    def remove(self) -> None:
        """Deletes the work folder (and releases the lock)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def frame_name(g: int) -> str:
    return f"frame_{g:06d}.png"


def frame_index(name: str) -> Optional[int]:
    if name.startswith("frame_") and name.endswith(".png") and name[6:-4].isdigit():
        return int(name[6:-4])
    return None
