"""Image files through Pillow: read one (checked: 8-bit RGB only), list a folder in natural
order (``2.png`` before ``10.png``), write one PNG atomically."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from zsm_tf.io.formats import IMAGE_EXTS, MediaError


def natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _is_16bit(im) -> bool:
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return True
    for tile in getattr(im, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else "")
        if ";16" in rawmode:   # e.g. PNG 48-bit RGB: Pillow opens it as "RGB" and drops 8 bits
            return True
    return False


def check_image(path, im) -> None:
    """Rejects images the model cannot take without a silent, lossy guess."""
    if _is_16bit(im):
        raise MediaError(f"{path}: 16-bit image (mode {im.mode}); convert the frames to 8-bit RGB first")
    if im.mode in ("1", "L", "LA", "La"):
        raise MediaError(f"{path}: grayscale image (mode {im.mode}); convert the frames to RGB first")
    if im.mode == "P" and im.palette is not None and im.palette.mode in ("L", "LA"):
        raise MediaError(f"{path}: grayscale (palette) image; convert the frames to RGB first")


def has_alpha(im) -> bool:
    """The image has an alpha channel (or a transparent palette entry)."""
    return im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info


def to_rgb_array(im) -> np.ndarray:
    if im.mode != "RGB":
        im = im.convert("RGB")   # palette, RGBA (alpha dropped), CMYK, YCbCr
    return np.asarray(im, dtype=np.uint8)


def read_image(path) -> np.ndarray:
    """One image file as ``uint8 [H, W, 3]`` RGB, or :class:`MediaError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            check_image(path, im)
            return to_rgb_array(im)
    except FileNotFoundError:
        raise MediaError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise MediaError(f"{path}: not an image Pillow can read") from None
    except OSError as e:
        raise MediaError(f"{path}: cannot read image ({e})") from None


def list_images(folder) -> list:
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS
             and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))



def write_png(path, frame: np.ndarray, compress_level: int = 3) -> None:
    """One PNG, written under a temporary name then renamed (never half-written)."""
    from PIL import Image

    path = Path(path)
    tmp = path.with_name("." + path.name + ".part")
    try:
        Image.fromarray(np.ascontiguousarray(frame)).save(tmp, format="PNG", compress_level=compress_level)
        os.replace(tmp, path)
    except OSError as e:
        raise MediaError(f"{path.parent}: cannot write frame {path.name} ({e.strerror or e})") from None
