"""The parts of a video job (:mod:`zsm_tf.pipeline.video`) around the model: what the input holds, where the output
goes, and how a run is made resumable (:mod:`zsm_tf.pipeline.resume`).

* :func:`inspect_input` decodes a video once, before any work: exact frame count, timestamps,
  rotation, colour tags, and where the stream is damaged (see :meth:`VideoSource.scan`).
* :func:`check_overwrite`: an existing output file, or a non-empty output folder, is refused
  unless ``--overwrite`` (a folder is then replaced whole, never mixed).
* :func:`job_record`: what a rerun must match to resume (input identity, weights, flags...).
* :func:`sigterm_as_interrupt`: SIGTERM (``timeout``, docker, systemd) is handled like Ctrl-C.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from zsm_tf import interrupts
from zsm_tf import io as vio
from zsm_tf.interrupts import Terminated  # noqa: F401 - re-exported
from zsm_tf.pipeline.resume import MANIFEST_VERSION, input_identity, sha256_file


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


def inspect_input(src, progress: bool = False) -> InputFacts:
    """Decodes the input's frames once before any work (a video or an image folder alike): the
    exact count, timestamps, and where the input is damaged, if anywhere."""
    info = src.info
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=info.num_frames, unit="frame", desc="scan", file=sys.stderr,
                   dynamic_ncols=True, leave=False)
    try:
        scan = src.scan(progress=(lambda n: bar.update(n - bar.n)) if bar else None)
    finally:
        if bar is not None:
            bar.close()
    return InputFacts(num_frames=scan.count, pts=scan.pts, time_base=scan.time_base,
                      rotation=scan.rotation, colour=scan.colour, damage=scan.error, alpha=scan.alpha)


def output_path(output) -> Path:
    return Path(str(output).rstrip("/" + os.sep) or str(output))


def check_overwrite(output, overwrite: bool) -> None:
    """Refuses to replace an existing output file or a non-empty output folder without
    ``--overwrite`` (PNG frames are never mixed with what a folder already holds)."""
    p = output_path(output)
    if vio.is_video_path(output):
        if p.exists() and not overwrite:
            raise vio.MediaError(f"{output}: already exists; pass --overwrite to replace it")
    elif p.is_dir():
        n = sum(1 for _ in p.iterdir())
        if n and not overwrite:
            raise vio.MediaError(f"{output}: folder is not empty ({n} entries); pass --overwrite to "
                                 f"replace it whole, or name a new folder")


def weights_identity(weights_path) -> Optional[dict]:
    if weights_path is None or not Path(weights_path).is_file():
        return None
    p = Path(weights_path)
    return {"file": str(p.resolve()), "sha256": sha256_file(p)}


def job_record(input, output, flags: dict, num_frames: int, window: int, segment_frames: int,
               model=None, weights_path=None) -> dict:
    """What a rerun must match to resume: input, weights, model, ``flags`` (the options that
    change the output), frames, window."""
    config = None
    if hasattr(model, "get_config"):
        try:
            config = model.get_config()
        except Exception:
            config = None
    flags = {k: (None if v is None else str(v)) for k, v in sorted(flags.items())}
    from zsm_tf import __version__

    return {"version": MANIFEST_VERSION, "zsm_tf": __version__, "input": input_identity(input),
            "weights": weights_identity(weights_path), "model": config, "flags": flags,
            "frames": num_frames, "window": window, "segment_frames": segment_frames,
            "output": "video" if vio.is_video_path(output) else "png"}
