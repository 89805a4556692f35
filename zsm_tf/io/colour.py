"""Colour conversion between decoded video frames and ``uint8 [H, W, 3]`` RGB, keeping the
stream's matrix (BT.601/709/2020) and range (limited/full) when it is tagged."""
from __future__ import annotations

from typing import Optional

import numpy as np

# FFmpeg colorspaces swscale converts with (BT.709, FCC, BT.470BG, SMPTE170M, SMPTE240M, BT.2020)
_SWS_COLORSPACES = {1, 4, 5, 6, 7, 9, 10}


def frame_colour(frame) -> Optional[dict]:
    """The colour tags of a decoded frame (FFmpeg enum ints; 2 = unspecified), None if untagged."""
    c = {k: int(getattr(frame, k, 2) or 2) for k in ("color_primaries", "color_trc", "colorspace")}
    c["color_range"] = int(getattr(frame, "color_range", 0) or 0)
    if all(v == 2 for k, v in c.items() if k != "color_range") and c["color_range"] == 0:
        return None
    return c


def to_rgb24(frame) -> np.ndarray:
    """A decoded frame as ``uint8 [H, W, 3]`` RGB, with its own matrix and range when tagged."""
    kw = {}
    if int(getattr(frame, "colorspace", 2) or 2) in _SWS_COLORSPACES:
        kw["src_colorspace"] = int(frame.colorspace)
    if int(getattr(frame, "color_range", 0) or 0) in (1, 2):
        kw["src_color_range"] = int(frame.color_range)
    try:
        return frame.to_ndarray(format="rgb24", **kw)
    except (TypeError, ValueError):   # a PyAV without these arguments: FFmpeg's defaults
        return frame.to_ndarray(format="rgb24")


def rgb_to_video_frame(frame: np.ndarray, colour=None):
    """``uint8 [H, W, 3]`` RGB -> a ``yuv420p`` VideoFrame with ``colour``'s matrix and range."""
    import av

    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    kw = {}
    if colour and colour.get("colorspace") in _SWS_COLORSPACES:
        kw["dst_colorspace"] = colour["colorspace"]
    if colour and colour.get("color_range") in (1, 2):
        kw["dst_color_range"] = colour["color_range"]
    if kw:
        try:
            return vf.reformat(format="yuv420p", **kw)
        except (TypeError, ValueError):
            pass
    return vf
