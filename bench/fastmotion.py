"""Fast-motion test clips made on the fly from real footage (nothing committed, nothing upscaled).

A *canvas* is a mosaic of real frames (640x360 crops of ../shared/videos clips, at their own
resolution); a clip is a window of the output size moved over it: a camera pan of ``(dx, dy)``
HR pixels per frame, optionally with a zoom (the window shrinks by ``zoom`` percent per frame,
then is resized down to the output size, antialiased: never upscaled) and with a moving *object*
(a rectangle cut from elsewhere in the canvas, moving against the pan: occlusions).

Named clips (``SYNTH``), as ``synth/NAME[@WxH]`` in ``bench/quality.py --clips`` (default size
1280x720, i.e. 320x180 input)::

    pan8  pan16  pan24  diag12  zoom  pan16obj  diag8obj  pan40  diag32  pan48obj  pan72
"""
from __future__ import annotations

from functools import lru_cache
from itertools import islice
from pathlib import Path

import numpy as np

# (source clip, first frame): 640x360 tiles of real footage (centre crops)
TILES = (("one-by-one-person-detection.mp4", 0), ("bottle-detection.mp4", 100),
         ("again.mkv", 10), ("one-by-one-person-detection.mp4", 700),
         ("bottle-detection.mp4", 900), ("night.mkv", 40), ("one-by-one-person-detection.mp4", 1200),
         ("thanks.mkv", 20), ("bottle-detection.mp4", 400), ("yes.mkv", 30),
         ("one-by-one-person-detection.mp4", 300), ("book.mkv", 5))
# name: pan (dx, dy) HR px/frame, zoom % per frame, object velocity (dx, dy) HR px/frame or None
SYNTH = {
    "pan8": dict(pan=(8, 0)),
    "pan16": dict(pan=(16, 0)),
    "pan24": dict(pan=(24, 0)),
    "diag12": dict(pan=(12, -8)),
    "zoom": dict(pan=(4, 2), zoom=1.5),
    "pan16obj": dict(pan=(16, 0), obj=(-12, 4)),
    "diag8obj": dict(pan=(-8, 6), obj=(14, -6)),
    # very fast (at 1280x720: 20-28 px of motion between two 320x180 input frames)
    "pan40": dict(pan=(40, 0)),
    "diag32": dict(pan=(-32, 24)),
    "pan48obj": dict(pan=(48, 0), obj=(-24, 8)),
    "pan72": dict(pan=(72, 0)),   # 36 px between inputs at 320x180: beyond a 3-level search
}


@lru_cache(maxsize=2)
def canvas(videos, cols=5, rows=4, tile=(640, 360)):
    """uint8 [rows*360, cols*640, 3]: a mosaic of real frames (TILES, cycled)."""
    from zsm_tf.io import open_source

    tw, th = tile
    out = np.zeros((rows * th, cols * tw, 3), np.uint8)
    for i in range(rows * cols):
        name, start = TILES[i % len(TILES)]
        with open_source(Path(videos) / name) as src:
            f = next(islice(iter(src), start + 7 * (i // len(TILES)), None))
        y0, x0 = (f.shape[0] - th) // 2, (f.shape[1] - tw) // 2
        r, c = divmod(i, cols)
        out[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = f[y0:y0 + th, x0:x0 + tw]
    return out


def synth_clip(videos, frames, size=(1280, 720), pan=(16, 0), zoom=0.0, obj=None, obj_size=None):
    """``frames`` uint8 HR frames ``[h, w, 3]`` (``size = (w, h)``) of a window moving over
    :func:`canvas` (see the module doc)."""
    from PIL import Image

    cv = canvas(str(videos))
    ch, cw = cv.shape[:2]
    w, h = size
    n = frames
    scale0 = (1.0 + zoom / 100.0) ** (n - 1)        # window size factor of frame 0 (>= 1)
    pdx, pdy = pan
    # start so that the whole path of the (largest) window stays on the canvas
    span_x, span_y = abs(pdx) * (n - 1) + w * scale0, abs(pdy) * (n - 1) + h * scale0
    if span_x > cw or span_y > ch:
        raise ValueError(f"canvas {cw}x{ch} too small for {n} frames of {w}x{h} at {pan}")
    cx0 = (cw - span_x) / 2 + w * scale0 / 2 + (abs(pdx) * (n - 1) if pdx < 0 else 0)
    cy0 = (ch - span_y) / 2 + h * scale0 / 2 + (abs(pdy) * (n - 1) if pdy < 0 else 0)
    if obj is not None:  # a rectangle of the canvas's far corner, pasted over it moving by `obj`
        ow, oh = obj_size or (w // 4, h // 3)
        patch = cv[ch - oh - 8:ch - 8, cw - ow - 8:cw - 8]
    img = Image.fromarray(cv)
    out = []
    for t in range(n):
        s = (1.0 + zoom / 100.0) ** (n - 1 - t)
        cx, cy = cx0 + pdx * t, cy0 + pdy * t
        box = (cx - w * s / 2, cy - h * s / 2, cx + w * s / 2, cy + h * s / 2)
        if s == 1.0 and float(box[0]).is_integer() and float(box[1]).is_integer():
            x0, y0 = int(box[0]), int(box[1])
            f = cv[y0:y0 + h, x0:x0 + w].copy()
        else:
            f = np.asarray(img.resize((w, h), Image.LANCZOS, box=box)).copy()
        if obj is not None:
            ox = int(round(w / 2 - ow / 2 + obj[0] * (t - (n - 1) / 2)))
            oy = int(round(h / 2 - oh / 2 + obj[1] * (t - (n - 1) / 2)))
            xa, ya, xb, yb = max(ox, 0), max(oy, 0), min(ox + ow, w), min(oy + oh, h)
            if xb > xa and yb > ya:
                f[ya:yb, xa:xb] = patch[ya - oy:yb - oy, xa - ox:xb - ox]
        out.append(f)
    return out


def read_synth(videos, spec, frames):
    """HR frames of ``synth/NAME[@WxH]`` (see SYNTH); ``frames`` made odd."""
    name, _, size = spec.split("/", 1)[1].partition("@")
    w, h = (int(v) for v in (size or "1280x720").lower().split("x"))
    frames -= 1 - frames % 2
    return synth_clip(videos, frames, (w - w % 4, h - h % 4), **SYNTH[name])
