"""Training clips from a folder of video files, decoded with PyAV.

Every run of ``frames`` (7) consecutive frames of every video is one item (windows overlap);
a sample is an item plus a random ``hr_patch`` x ``hr_patch`` crop (optionally of a region
``1/resize`` times larger, downscaled with a bicubic antialiasing filter, which also removes
much of the compression noise of full-size footage). Inputs are the odd frames at LR
(bicubic x4 on the fly), targets all frames.

Scanning only demuxes (no decoding): it lists every video packet's presentation time stamp, so
frame ``i`` of a file is the ``i``-th smallest time stamp, whatever the frame rate (odd rates,
variable rates, B-frames). Reading a window seeks to the key frame before it and decodes forward
until the window's time stamps are all seen (falling back to decoding from the start if a seek
lands late). Decoding runs in ``tf.numpy_function`` inside the ``tf.data`` pipeline, so this
source needs a Python host (fine for GPUs and TPU VMs, not for remote TPU nodes).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from zsm_tf.io import VIDEO_INPUT_EXTS


def probe(path):
    """``(sorted presentation time stamps of the video packets, width, height)`` or None."""
    import av

    try:
        with av.open(os.fspath(path)) as c:
            if not c.streams.video:
                return None
            st = c.streams.video[0]
            w, h = st.codec_context.width, st.codec_context.height
            pts = [p.pts for p in c.demux(st) if p.pts is not None and p.size > 0]
    except Exception:  # not a video PyAV can read
        return None
    if not pts or not w or not h:
        return None
    return sorted(pts), int(w), int(h)


def read_frames(path, pts, start, count, box=None):
    """Frames ``start .. start+count-1`` of a video (``pts`` from :func:`probe`) as uint8
    ``[count, H, W, 3]`` RGB, cropped to ``box = (y0, x0, h, w)`` if given."""
    import av

    want = [int(p) for p in pts[start:start + count]]
    index = {p: i for i, p in enumerate(want)}

    def crop(a):
        if box is None:
            return a
        y0, x0, h, w = box
        return a[y0:y0 + h, x0:x0 + w]

    def decode(seek):
        got = [None] * len(want)
        left = len(want)
        with av.open(os.fspath(path)) as c:
            st = c.streams.video[0]
            if seek and start > 0:
                c.seek(want[0], stream=st, backward=True, any_frame=False)
            for frame in c.decode(st):
                i = index.get(frame.pts)
                if i is None or got[i] is not None:
                    if frame.pts is not None and frame.pts > want[-1] and left == 0:
                        break
                    continue
                got[i] = crop(frame.to_ndarray(format="rgb24"))
                left -= 1
                if left == 0:
                    break
        return got

    got = decode(seek=True)
    if any(g is None for g in got):
        got = decode(seek=False)
    if any(g is None for g in got):
        raise IOError(f"could not decode frames {start}..{start + count - 1} of {path}")
    return np.stack(got)


class VideoFolder:
    """All ``frames``-frame windows of the videos under ``root`` (searched recursively)."""

    kind = "videos"

    def __init__(self, root, frames=7, hr_patch=128, resize=1.0, crop="random", stride=1,
                 files=None, exclude=(), frame_step=1, pan_fraction=0.0, pan_max=24):
        self.root = Path(root)
        self.frames = int(frames)
        self.hr_patch = int(hr_patch)
        self.resize = float(resize)
        self.crop = crop
        self.frame_step = int(frame_step)
        if self.frame_step < 1:
            raise ValueError(f"frame_step must be >= 1, got {frame_step}")
        self.span = (self.frames - 1) * self.frame_step + 1   # source frames a window covers
        # camera pans made from one real frame (fast motion the footage lacks): a fraction of the
        # items, each a window moving by up to pan_max HR pixels per frame on each axis
        self.pan_fraction = float(pan_fraction)
        self.pan_max = int(pan_max)
        if not 0.0 <= self.pan_fraction <= 1.0 or self.pan_max < 0:
            raise ValueError(f"pan_fraction must be in [0, 1] and pan_max >= 0, got "
                             f"{pan_fraction}, {pan_max}")
        self.region = int(round(self.hr_patch / self.resize))
        if files is None:
            files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in VIDEO_INPUT_EXTS)
        self.excluded = sorted(os.fspath(f) for f in files if Path(f).name in set(exclude))
        files = [f for f in files if Path(f).name not in set(exclude)]
        self.videos = []
        self.skipped = []
        for f in files:
            info = probe(f)
            if info is None or len(info[0]) < self.span or min(info[1], info[2]) < self.region:
                self.skipped.append(os.fspath(f))
                continue
            self.videos.append({"path": os.fspath(f), "pts": info[0], "width": info[1],
                                "height": info[2]})
        if not self.videos:
            raise FileNotFoundError(
                f"no usable video under {root} (need >= {self.frames} frames and frames of at "
                f"least {self.region}x{self.region}; skipped {len(self.skipped)})")
        win_file, win_start = [], []
        for i, v in enumerate(self.videos):
            starts = range(0, len(v["pts"]) - self.span + 1, int(stride))
            win_file += [i] * len(starts)
            win_start += list(starts)
        self._win_file = np.asarray(win_file, np.int64)
        self._win_start = np.asarray(win_start, np.int64)
        self.num_items = len(win_file)

    def describe(self) -> str:
        n = sum(len(v["pts"]) for v in self.videos)
        res = f", regions {self.region}px resized x{self.resize:g}" if self.resize != 1 else ""
        out = f", {len(self.excluded)} held out" if self.excluded else ""
        if self.pan_fraction:
            res += f"; {self.pan_fraction:.0%} camera pans of up to {self.pan_max} px/frame"
        return (f"videos under {self.root} ({len(self.videos)} files{out}, {n} frames, "
                f"{self.num_items} {self.frames}-frame windows"
                f"{f' of frames {self.frame_step} apart' if self.frame_step > 1 else ''}; {self.crop} crops "
                f"{self.hr_patch}x{self.hr_patch}{res}; LR by bicubic x4 on the fly)")

    def window(self, item):
        """``(video dict, first frame)`` of an item."""
        item = int(item)
        return self.videos[self._win_file[item]], int(self._win_start[item])

    def read(self, item, fy=0.5, fx=0.5, pan=None):
        """HR clip uint8 ``[frames, hr_patch, hr_patch, 3]`` of an item; the crop's top-left
        corner is at fraction ``(fy, fx)`` of its possible range. ``pan=(dx, dy)``: instead, a
        window moving ``(dx, dy)`` HR pixels per frame over the item's first frame."""
        v, start = self.window(item)
        if pan is not None and (pan[0] or pan[1]):
            return self._pan(v, start, fy, fx, int(pan[0]), int(pan[1]))
        r = self.region
        y0 = int(min(float(fy), 1.0) * (v["height"] - r + 1)) if self.crop != "center" else \
            (v["height"] - r) // 2
        x0 = int(min(float(fx), 1.0) * (v["width"] - r + 1)) if self.crop != "center" else \
            (v["width"] - r) // 2
        y0, x0 = min(y0, v["height"] - r), min(x0, v["width"] - r)
        clip = read_frames(v["path"], v["pts"], start, self.span, (y0, x0, r, r))[::self.frame_step]
        if r != self.hr_patch:
            from PIL import Image

            size = (self.hr_patch, self.hr_patch)
            clip = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC))
                             for f in clip])
        return clip

    def _pan(self, v, start, fy, fx, dx, dy):
        """The frames of a ``hr_patch`` window moving ``(dx, dy)`` px/frame over one frame
        (integer shifts: exact pixels, no resampling)."""
        n, r = self.frames, self.hr_patch
        span_x, span_y = r + abs(dx) * (n - 1), r + abs(dy) * (n - 1)
        if span_x > v["width"] or span_y > v["height"]:   # too fast for this frame: slow down
            k = min(1.0, (v["width"] - r) / max(abs(dx) * (n - 1), 1),
                    (v["height"] - r) / max(abs(dy) * (n - 1), 1))
            dx, dy = int(dx * k), int(dy * k)
            span_x, span_y = r + abs(dx) * (n - 1), r + abs(dy) * (n - 1)
        frame = read_frames(v["path"], v["pts"], start, 1)[0]
        y0 = int(min(float(fy), 1.0) * (v["height"] - span_y)) + (abs(dy) * (n - 1) if dy < 0 else 0)
        x0 = int(min(float(fx), 1.0) * (v["width"] - span_x)) + (abs(dx) * (n - 1) if dx < 0 else 0)
        return np.stack([frame[y0 + dy * t:y0 + dy * t + r, x0 + dx * t:x0 + dx * t + r]
                         for t in range(n)])

    def load(self, k, item, seed):
        del k
        f = tf.random.stateless_uniform([5], tf.random.experimental.stateless_fold_in(seed, 3))

        def fn(i, fy, fx, p, ux, uy):
            pan = None
            if p < self.pan_fraction:
                pan = (int(round((2 * ux - 1) * self.pan_max)), int(round((2 * uy - 1) * self.pan_max)))
            return self.read(i, fy, fx, pan)

        clip = tf.numpy_function(fn, [item, f[0], f[1], f[2], f[3], f[4]], tf.uint8, stateful=False)
        clip = tf.ensure_shape(clip, [self.frames, self.hr_patch, self.hr_patch, 3])
        return {"hr": tf.image.convert_image_dtype(clip, tf.float32)}
