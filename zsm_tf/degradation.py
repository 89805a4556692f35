"""The one degradation: LR frames from HR by antialiased bicubic x4, as the paper's data was made.

Training pairs (:mod:`zsm_tf.data.pipeline`), validation, ``zsm-tf evaluate``
(:mod:`zsm_tf.evaluation`) and the benches all degrade with :func:`downscale`, so a model is
scored on inputs made the way its training inputs were.
"""
from __future__ import annotations

import numpy as np

SCALE = 4


def downscale(frames, scale=SCALE, quantize=True):
    """``[..., H, W, 3]`` float in [0, 1] -> float32 tensor ``[..., H/scale, W/scale, 3]``:
    ``tf.image.resize(..., "bicubic", antialias=True)``.

    With ``antialias=True`` TensorFlow's bicubic (Keys kernel, a = -0.5) is stretched by the
    scale factor when downscaling, like MATLAB's ``imresize`` that made the paper's LR data.
    ``quantize`` rounds to 8-bit levels, as LR frames stored as PNG are.
    """
    import tensorflow as tf

    frames = tf.convert_to_tensor(frames, tf.float32)
    shape = tf.shape(frames)
    lr = tf.image.resize(frames, [shape[-3] // scale, shape[-2] // scale], method="bicubic",
                         antialias=True)
    lr = tf.clip_by_value(lr, 0.0, 1.0)
    if quantize:
        lr = tf.round(lr * 255.0) / 255.0
    return lr


def downscale_image(img: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """:func:`downscale` of uint8 ``[H, W, 3]`` (H, W multiples of ``scale``) -> uint8."""
    lr = downscale(np.asarray(img, np.float32) * np.float32(1 / 255), scale, quantize=True)
    return np.round(lr.numpy() * 255.0).astype(np.uint8)
