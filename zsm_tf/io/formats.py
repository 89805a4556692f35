"""Paths and formats: what a video or image file is called, which container an output path
means, whether it can be written, and :class:`MediaError`, the one error type of :mod:`zsm_tf.io`."""
from __future__ import annotations

import os
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Optional

VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm"}  # what a video output path ends with
# video files read as training data (``videos:DIR``): anything PyAV demuxes, by these names
VIDEO_INPUT_EXTS = VIDEO_EXTS | {".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp", ".ogv",
                                 ".y4m", ".gif"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".tga"}
DEFAULT_IMAGE_FPS = Fraction(25)
FORMAT_OF_EXT = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska",
                 ".avi": "avi", ".webm": "webm"}


class MediaError(Exception):
    """A problem with the user's input or output; the message is one line, meant to be shown."""



def ff_msg(e) -> str:
    """The first line of a PyAV / FFmpeg error."""
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).splitlines()[0] if msg else type(e).__name__


def is_video_path(path) -> bool:
    s = str(path)
    return not s.endswith(("/", os.sep)) and Path(s).suffix.lower() in VIDEO_EXTS


def container_of(path) -> Optional[str]:
    """FFmpeg's format name for a video output path ("mp4", "matroska", "avi"...), else None."""
    return FORMAT_OF_EXT.get(Path(str(path)).suffix.lower()) if is_video_path(path) else None


def container_format(path) -> str:
    """FFmpeg's format name of a video path's extension (KeyError for others)."""
    return FORMAT_OF_EXT[Path(path).suffix.lower()]


def check_output_path(path, input_path=None) -> None:
    """Fails early (before any work) when ``path`` cannot be written."""
    p = Path(path)
    if input_path is not None and p.exists() and p.resolve() == Path(input_path).resolve():
        raise MediaError(f"{path}: output is the input")
    parent = p.resolve().parent if not str(path).endswith(("/", os.sep)) else p.resolve().parent
    if is_video_path(path):
        if p.is_dir():
            raise MediaError(f"{path}: is a folder; give a video file name")
    elif p.exists() and not p.is_dir():
        raise MediaError(f"{path}: exists and is not a folder (use a video extension: "
                         f"{', '.join(sorted(VIDEO_EXTS))}, or a folder name for PNG frames)")
    if not parent.is_dir():
        raise MediaError(f"{path}: cannot write: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MediaError(f"{path}: cannot write: {_why_unwritable(parent)} ({parent})")
    if p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
        raise MediaError(f"{path}: cannot write: {_why_unwritable(p)}")


def _why_unwritable(folder) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "permission denied"


def temp_sibling(path: Path, suffix="") -> Path:
    return path.parent / f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
