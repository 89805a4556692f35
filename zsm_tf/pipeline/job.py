"""The parts of a video job (:mod:`zsm_tf.pipeline.video`) around the model: what the input holds,
where the output goes, what identifies the job, and how its messages name its settings.

* :func:`inspect_input` decodes a video once, before any work: exact frame count, timestamps,
  rotation, colour tags, and where the stream is damaged (see :meth:`VideoSource.scan`).
* :func:`check_overwrite`: an existing output file, or a non-empty output folder, is refused
  unless ``overwrite`` (a folder is then replaced whole, never mixed).
* :class:`JobIdentity`: what a rerun must match to resume (input, weights, settings...), the
  one place it is said.
* :class:`Said`, :class:`JobSettingError`: messages that name the job's settings in the
  library's words; the commands say them with their options.
* :func:`sigterm_as_interrupt`: SIGTERM (``timeout``, docker, systemd) is handled like Ctrl-C.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

from zsm_tf import interrupts
from zsm_tf import io as vio
from zsm_tf.interrupts import Terminated  # noqa: F401 - re-exported
from zsm_tf.progress import SILENT, Progress

IDENTITY_VERSION = 2
HEAD_BYTES = 8 << 20


# ------------------------------------------------------------------------------ settings named


class Said(str):
    """A message that names settings of a video job (:class:`~zsm_tf.pipeline.video.VideoJob`'s
    and the upscaler's arguments): as a ``str``, in the library's words (``overwrite=True``);
    :meth:`said_with` says it with other names (the commands: their options).

    ``template``'s field ``{setting}`` is the first of ``settings``, ``{settings}`` all of them,
    comma-separated; its other fields are ``values`` (inserted as they are)."""

    WORDS = {"overwrite": "overwrite=True", "strict": "strict=True", "resume": "resume=False"}

    def __new__(cls, template: str, settings: Sequence[str] = (), **values):
        self = super().__new__(cls, _render(template, settings, values, cls.WORDS))
        self.template, self.settings, self.values = template, tuple(settings), values
        return self

    def said_with(self, names: Mapping[str, str]) -> str:
        """The message with each setting called ``names[setting]`` (the library's word for
        those it does not hold)."""
        return _render(self.template, self.settings, self.values, {**self.WORDS, **names})


def _render(template, settings, values, names) -> str:
    said = [names.get(s, s) for s in settings]
    return template.format(setting=said[0] if said else "", settings=", ".join(said), **values)


class JobSettingError(vio.MediaError, ValueError):
    """A problem of a video job that one of its settings answers: ``setting`` names it (an
    argument of :class:`~zsm_tf.pipeline.video.VideoJob`: ``fps``, ``crf``, ``segment_frames``,
    ``overwrite``, ``strict``, ``resume``), ``said`` is the message (:class:`Said`), ``str(e)``
    its library words."""

    def __init__(self, template: str, setting: str, **values):
        self.setting = setting
        self.said = Said(template, (setting,), **values)
        super().__init__(str(self.said))


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt); a command run
    as a process has this already, for its whole run (:func:`zsm_tf.interrupts.install`)."""
    if threading.current_thread() is not threading.main_thread() or interrupts.installed():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@dataclass
class InputFacts:
    num_frames: int                  # frames to upscale (those before any damage)
    pts: Optional[list] = None       # their timestamps (videos), in time_base units
    time_base: object = None
    rotation: int = 0
    colour: Optional[dict] = None
    damage: Optional[str] = None     # why the stream stops early (one line), or None
    alpha: bool = False              # the frames have an alpha channel (dropped)


def inspect_input(src, progress: Progress = SILENT) -> InputFacts:
    """Decodes the input's frames once before any work (a video or an image folder alike): the
    exact count, timestamps, and where the input is damaged, if anywhere."""
    progress.start(src.info.num_frames, "frame", "scan", keep=False)
    try:
        scan = src.scan(progress=progress)
    finally:
        progress.close()
    return InputFacts(num_frames=scan.count, pts=scan.pts, time_base=scan.time_base,
                      rotation=scan.rotation, colour=scan.colour, damage=scan.error, alpha=scan.alpha)


def output_path(output) -> Path:
    return Path(str(output).rstrip("/" + os.sep) or str(output))


def check_overwrite(output, overwrite: bool) -> None:
    """Refuses to replace an existing output file or a non-empty output folder without
    ``overwrite`` (PNG frames are never mixed with what a folder already holds):
    :class:`JobSettingError`."""
    p = output_path(output)
    if vio.is_video_path(output):
        if p.exists() and not overwrite:
            raise JobSettingError("{output}: already exists; pass {setting} to replace it",
                                  "overwrite", output=output)
    elif p.is_dir():
        n = sum(1 for _ in p.iterdir())
        if n and not overwrite:
            raise JobSettingError("{output}: folder is not empty ({n} entries); pass {setting} to "
                                  "replace it whole, or name a new folder", "overwrite", output=output, n=n)


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


def weights_identity(weights_path) -> Optional[dict]:
    """A weights file: its SHA-256; a folder (a training run): its path; None: no path."""
    if weights_path is None:
        return None
    p = Path(weights_path)
    if not p.is_file():
        return {"path": str(p.resolve())}
    return {"file": str(p.resolve()), "sha256": sha256_file(p)}


def upscaler_settings(upscaler) -> dict:
    """The settings of a :class:`~zsm_tf.inference.SpaceTimeUpscaler` that change its output
    frames: window, tile, overlap, memory budget (when set: the default one follows the free
    memory, and the same job must resume), self-ensemble, batch, precision."""
    tile = upscaler.tile
    return {"window": upscaler.window, "tile": list(tile) if isinstance(tile, tuple) else tile,
            "overlap": upscaler.overlap, "max_memory": upscaler.max_memory_setting,
            "self_ensemble": len(upscaler.flips) > 1, "batch": upscaler.batch,
            "precision": upscaler.precision}


@dataclass(frozen=True)
class JobIdentity:
    """What decides whether an earlier unfinished run of an output can be resumed, the one place
    it is said: the input (a file's size, mtime and head hash; a folder's listing), the weights
    (hash), the model's config, the output's kind, the frame count and ``settings``, every
    setting that changes the output (the job's and :func:`upscaler_settings`). Settings of speed
    (``segment_seconds``, pipelining, the XLA-compiled reconstruction: same outputs to float
    rounding) or of what to do with an earlier run (``overwrite``, ``resume``, ``strict``) are
    not in it. ``record``: JSON, as the manifest keeps it."""
    record: dict

    @classmethod
    def of(cls, input, output, num_frames: int, settings: Mapping, model=None,
           weights_path=None) -> "JobIdentity":
        config = None
        if hasattr(model, "get_config"):
            try:
                config = model.get_config()
            except Exception:
                config = None
        from zsm_tf import __version__

        record = {"version": IDENTITY_VERSION, "zsm_tf": __version__, "input": input_identity(input),
                  "weights": weights_identity(weights_path), "model": config, "frames": num_frames,
                  "output": "video" if vio.is_video_path(output) else "png",
                  "settings": {k: settings[k] for k in sorted(settings)}}
        return cls(json.loads(json.dumps(record, default=str)))

    def differences(self, old: dict) -> List[str]:
        """What differs from an earlier job's ``record``: the settings by their names, the
        rest by its key (``input``, ``weights``, ``model``, ``frames``...)."""
        out = []
        for k in sorted(set(old) | set(self.record)):
            mine, theirs = self.record.get(k), old.get(k)
            if mine == theirs:
                continue
            if k == "settings" and isinstance(mine, dict) and isinstance(theirs, dict):
                out += [s for s in sorted(set(mine) | set(theirs)) if mine.get(s) != theirs.get(s)]
            else:
                out.append(k)
        return out
