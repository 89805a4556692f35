"""Vimeo-90K septuplets (the paper's training set).

Layout::

    DIR/sequences/00001/0001/im1.png ... im7.png
    DIR/sep_trainlist.txt   (lines "00001/0001")
    DIR/sep_testlist.txt

LR inputs are made on the fly (frames 1, 3, 5, 7; bicubic x4 with antialiasing, see
:func:`zsm_tf.data.pipeline.downscale`) unless ``lr_dir`` holds prepared LR septuplets, with the
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


def read_list(root, split="train"):
    """The septuplet ids ("00001/0001") of ``sep_{split}list.txt``."""
    path = Path(root) / f"sep_{split}list.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (expected the Vimeo-90K septuplet layout)")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _seq_root(d):
    d = Path(d)
    return d / "sequences" if (d / "sequences").is_dir() else d


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
        seq = _seq_root(self.root)
        missing = [i for i in self.ids[:3] if not (seq / i / "im1.png").is_file()]
        if missing:
            raise FileNotFoundError(f"{seq / missing[0] / 'im1.png'} not found")
        self._hr_paths = tf.constant([[os.fspath(seq / i / f"im{f + 1}.png")
                                       for f in range(self.frames)] for i in self.ids])
        if self.lr_dir is not None:
            lseq = _seq_root(self.lr_dir)
            if not (lseq / self.ids[0] / "im1.png").is_file():
                raise FileNotFoundError(f"{lseq / self.ids[0] / 'im1.png'} not found")
            self._lr_paths = tf.constant([[os.fspath(lseq / i / f"im{f + 1}.png")
                                           for f in range(0, self.frames, 2)] for i in self.ids])

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
