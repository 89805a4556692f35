"""Vimeo-90K septuplets (the paper's training set).

Layout::

    DIR/sequences/00001/0001/im1.png ... im7.png
    DIR/sep_trainlist.txt   (lines "00001/0001")
    DIR/sep_testlist.txt

LR inputs are made on the fly (frames 1, 3, 5, 7; bicubic x4 with antialiasing, see
:func:`zsm_tf.degradation.downscale`) unless ``lr_dir`` holds prepared LR septuplets, with the
same ``sequences/xxxxx/xxxx/imN.png`` layout (or ``xxxxx/xxxx/imN.png`` directly under it), each
frame ``scale`` times smaller (the authors' ``vimeo_septuplet_matlabLRx4``).

Files are read and decoded by TensorFlow ops (no Python in the pipeline). The HR crop is taken at
LR-pixel-aligned positions (multiples of ``scale``) so the prepared LR crop matches exactly.
"""
from __future__ import annotations

import os
from pathlib import Path

import tensorflow as tf

_fold = tf.random.experimental.stateless_fold_in


def read_list(root, split="train", list_file=None):
    """The septuplet ids ("00001/0001") of ``list_file`` (default ``DIR/sep_{split}list.txt``);
    the one reader of the layout (training and ``zsm-tf evaluate``). ``FileNotFoundError`` /
    ``ValueError`` (an empty list)."""
    path = Path(list_file) if list_file else Path(root) / f"sep_{split}list.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (expected the Vimeo-90K septuplet layout: "
                                f"DIR/sep_{split}list.txt and DIR/sequences/)")
    ids = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not ids:
        raise ValueError(f"{path}: empty list")
    return ids


def _seq_root(d):
    d = Path(d)
    return d / "sequences" if (d / "sequences").is_dir() else d


def septuplet_paths(root, ids, frames=7, step=1):
    """``[[DIR/sequences/<id>/im1.png, ...], ...]``: frames ``1, 1+step, ...`` up to ``frames``
    of each id (``sequences/`` may be left out)."""
    seq = _seq_root(root)
    return [[seq / i / f"im{f + 1}.png" for f in range(0, frames, step)] for i in ids]


class VimeoSeptuplets:
    """Vimeo-90K septuplets with random (training) or centre (validation) HR crops."""

    kind = "vimeo"

    def __init__(self, root, split="train", hr_patch=128, scale=4, lr_dir=None, crop="random",
                 frames=7, limit=None):
        self.root = Path(root)
        self.split = split
        self.ids = read_list(root, split)
        if limit:
            self.ids = self.ids[:int(limit)]
        self.frames = int(frames)
        self.hr_patch = int(hr_patch)
        self.scale = int(scale)
        if self.hr_patch % self.scale:
            raise ValueError("hr_patch must be a multiple of scale")
        self.lr_dir = Path(lr_dir) if lr_dir else None
        self.crop = crop
        self.num_items = len(self.ids)
        hr = septuplet_paths(self.root, self.ids, self.frames)
        missing = [p[0] for p in hr[:3] if not p[0].is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]} not found")
        self._hr_paths = tf.constant([[os.fspath(f) for f in p] for p in hr])
        if self.lr_dir is not None:
            lr = septuplet_paths(self.lr_dir, self.ids, self.frames, step=2)
            if not lr[0][0].is_file():
                raise FileNotFoundError(f"{lr[0][0]} not found")
            self._lr_paths = tf.constant([[os.fspath(f) for f in p] for p in lr])

    def describe(self) -> str:
        lr = f"prepared LR from {self.lr_dir}" if self.lr_dir else "LR by bicubic x4 on the fly"
        return (f"Vimeo-90K septuplets {self.root} ({self.split}: {self.num_items} clips; {lr}; "
                f"{self.crop} HR crops {self.hr_patch}x{self.hr_patch})")

    @staticmethod
    def _read(paths):
        return tf.map_fn(lambda p: tf.io.decode_png(tf.io.read_file(p), channels=3), paths,
                         fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))

    def _offsets(self, height, width, seed):
        s, p = self.scale, self.hr_patch
        ny = (height - p) // s + 1
        nx = (width - p) // s + 1
        tf.debugging.assert_positive(tf.minimum(ny, nx),
                                     message="Vimeo frames smaller than the HR patch")
        if self.crop == "center":
            return (ny // 2) * s, (nx // 2) * s
        r = tf.random.stateless_uniform([2], _fold(seed, 3), 0, 2 ** 30, dtype=tf.int64)
        return tf.cast(r[0] % tf.cast(ny, tf.int64), tf.int32) * s, \
            tf.cast(r[1] % tf.cast(nx, tf.int64), tf.int32) * s

    def load(self, k, item, seed):
        hr = self._read(self._hr_paths[item])
        shape = tf.shape(hr)
        y0, x0 = self._offsets(shape[1], shape[2], seed)
        p, s = self.hr_patch, self.scale
        out = {"hr": tf.ensure_shape(
            tf.image.convert_image_dtype(hr[:, y0:y0 + p, x0:x0 + p], tf.float32),
            [self.frames, p, p, 3])}
        if self.lr_dir is not None:
            lr = self._read(self._lr_paths[item])
            q = p // s
            out["lr"] = tf.ensure_shape(tf.image.convert_image_dtype(
                lr[:, y0 // s:y0 // s + q, x0 // s:x0 // s + q], tf.float32),
                [(self.frames + 1) // 2, q, q, 3])
        return out
