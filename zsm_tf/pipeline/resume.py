"""Resumable output: an upscale that is killed (Ctrl-C, SIGTERM, kill -9, a crash, a power cut)
continues where it stopped when the same command is run again.

The output is produced in **segments** of consecutive output frames (:mod:`zsm_tf.io.segments`) in a
work folder beside the output, named after it so a rerun finds it: ``.OUT.zsm-work/`` holds the
finished segments (``seg_00000.mp4``... or, for PNG output, ``frames/``), a ``manifest.json`` and
a ``lock``. A segment is committed (file fsync'ed and renamed, then the manifest rewritten
atomically) before the next starts; a rerun keeps the committed segments, drops anything else,
and upscales from the first missing one. At the end the segments are joined by stream copy (or
the frames folder renamed) into OUT and the work folder is removed.

The manifest records the job: the input's identity (size, mtime and a hash of its first MiBs, or
of a folder's listing), the weights' hash, the model config, every flag that can change the
output, the frame count and the model window. A rerun whose job differs starts afresh (with a
note saying what changed), as does ``--no-resume``.

**Same frames as an uninterrupted run.** The upscaler works on windows of ``N`` input frames
starting at ``0, N-1, 2(N-1)...`` (:class:`zsm_tf.inference.SpaceTimeUpscaler`), each computed
from its own frames only; a segment always starts just after a window boundary (output
``2s+1`` for window start ``s``), so resuming feeds the input from ``s`` and every window sees the
same frames as in one run. When fewer than ``N`` frames remain after ``s``, the feed starts at
``K-N`` instead: that is the upscaler's own last window (it moves the last window back to end on
the last frame), so it gives the same frames too.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, List, Optional

from zsm_tf.io import MediaError
from zsm_tf.io.images import write_png
from zsm_tf.io.segments import fsync_dir, join_segments

WORK_SUFFIX = ".zsm-work"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
DEFAULT_SEGMENT_FRAMES = 48
DEFAULT_SEGMENT_SECONDS = 120.0   # a slow job also commits at the first window after this
HEAD_BYTES = 8 << 20


class JobLockedError(MediaError):
    """Another process is writing the same output."""


# ------------------------------------------------------------------------------------ identity


def sha256_file(path, limit: Optional[int] = None) -> str:
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as f:
        while left is None or left > 0:
            chunk = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


def input_identity(path) -> dict:
    """A file: size, mtime and the SHA-256 of its first 8 MiB; a folder: a hash of its listing
    (names, sizes, mtimes of the files in it)."""
    p = Path(path)
    if p.is_dir():
        h = hashlib.sha256()
        n = 0
        for f in sorted(p.iterdir()):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                n += 1
        return {"folder": str(p.resolve()), "files": n, "listing_sha256": h.hexdigest()}
    st = p.stat()
    return {"file": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "head_sha256": sha256_file(p, HEAD_BYTES)}


def _normal(obj):
    return json.loads(json.dumps(obj, default=str))


def job_differences(old: dict, new: dict) -> List[str]:
    """Human names of what differs between two job records."""
    out = []
    for k in sorted(set(old) | set(new)):
        if old.get(k) == new.get(k):
            continue
        if k == "flags" and isinstance(old.get(k), dict) and isinstance(new.get(k), dict):
            out += [f"--{f.replace('_', '-')}" for f in sorted(set(old[k]) | set(new[k]))
                    if old[k].get(f) != new[k].get(f)]
        else:
            out.append(k)
    return out


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
    """Segments of about ``segment_frames`` output frames, each starting on a window boundary."""
    total = 2 * num_inputs - 1
    step = window - 1
    per = max(1, -(-segment_frames // (2 * step)))      # whole windows per segment
    bounds, j = [0], 1
    while 2 * j * per * step + 1 < total:
        bounds.append(2 * j * per * step + 1)
        j += 1
    bounds.append(total)
    segs = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        s = (a - 1) // 2 if a else 0                     # input frame the segment's window starts at
        feed = s if num_inputs - s >= window or a == 0 else max(0, num_inputs - window)
        segs.append(Segment(i, a, b, feed))
    return segs


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
      job: the job record (JSON-able): a rerun resumes only when it is equal.
      video: True for a video file (segments), False for a PNG folder.
      resume: False (``--no-resume``) discards any earlier progress.
      note: callable(str) for notes to the user.
    """

    def __init__(self, output, job: dict, video: bool, resume: bool = True,
                 note: Callable[[str], None] = lambda s: None):
        self.output = Path(str(output).rstrip("/" + os.sep) or str(output))
        self.path = work_dir_for(output)
        self.job = _normal(job)
        self.video = video
        self.note = note
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
            self.note(f"--no-resume: discarding the earlier unfinished run in {self.path}")
        elif old is not None:
            what = ", ".join(job_differences(old.get("job") or {}, self.job)) or "format"
            self.note(f"an earlier unfinished run of this output differs ({what}): starting afresh")
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


# ------------------------------------------------------------------------------------------ run


class _StatusOnly:
    """What :meth:`SpaceTimeUpscaler.stream` takes as ``progress``, passing on only its status
    text (the bar itself counts written frames, so that resumed frames are not counted twice)."""

    def __init__(self, status):
        self._status = status

    def update(self, n):
        pass

    def set_description(self, text):
        if self._status is not None:
            self._status(text)


def produce(work: ResumableOutput, plan: List[Segment], upscaler, source, num_inputs: int,
            timing=None, make_encoder=None, on_frame: Callable[[], None] = lambda: None,
            status: Optional[Callable[[str], None]] = None, units: Optional[List[Segment]] = None,
            commit_s: Optional[float] = None, clock: Callable[[], float] = time.monotonic,
            on_commit: Callable[[], None] = lambda: None) -> None:
    """Upscales the output frames that ``work`` has not committed yet, committing segments.

    A segment is committed at each end of a segment of ``plan`` (about ``segment_frames``
    outputs) and also, once ``commit_s`` seconds have passed since it started, at the next end
    of one of ``units`` (one model window each: ``plan_segments(K, N, 1)``), so that a slow job
    loses at most a few minutes. ``source.frames(start, stop)`` gives input frames;
    ``upscaler.stream(frames)`` the outputs; ``timing.pts(g)`` output ``g``'s timestamp;
    ``make_encoder(seg)`` a :class:`SegmentEncoder` for a video segment (None: PNG frames).
    ``on_frame()`` is called after each output frame written, ``on_commit()`` after each
    commit, ``status(text)`` when the upscaler says what it is doing (e.g. tracing the model)."""
    units = units or plan
    total = plan[-1].end
    done = work.done_frames
    if done >= total:
        return
    k = next((i for i, u in enumerate(units) if u.start == done), None)
    if k is None:
        raise MediaError(f"{work.path}: its committed segments do not end on a model window; "
                         f"rerun with --no-resume")
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
        for out in upscaler.stream(frames, progress=_StatusOnly(status)):
            if g < seg.start:
                g += 1
                continue
            if enc is not None:
                enc.write(out, timing.pts(g) - timing.pts(seg.start))
            else:
                write_png(work.frame_path(g), out)
            g += 1
            on_frame()
            if g in bounds or (g in unit_ends and commit_s is not None and clock() - t0 >= commit_s):
                work.commit(replace(seg, end=g), enc.finish() if enc is not None else None)
                enc = None
                on_commit()
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
