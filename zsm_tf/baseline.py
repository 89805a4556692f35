"""The naive space-time baseline, bicubic x4 + frame blending, and the frame interleave.

One definition for everything that shows or uses the baseline: the ``residual="bicubic"`` skip of
:class:`zsm_tf.ZoomingSlowMo`, the validation PSNR of training (``psnr_bicubic``) and
``zsm-tf evaluate``'s baseline column all call :func:`bicubic_blend` (TensorFlow's bicubic: Keys
kernel a = -0.5, half-pixel centres), so their numbers are comparable.
"""
from __future__ import annotations

import tensorflow as tf


def interleave(kept, new):
    """``kept`` [B, N, ...] and ``new`` [B, N-1, ...] -> [B, 2N-1, ...]:
    kept 0, new 0, kept 1, new 1, ..., kept N-1 (new i sits between kept i and i+1)."""
    kept = tf.convert_to_tensor(kept)
    new = tf.convert_to_tensor(new)
    shape = tf.shape(kept)
    pairs = tf.stack([kept[:, :-1], new], axis=2)  # [B, N-1, 2, ...]
    pairs = tf.reshape(pairs, tf.concat([[shape[0], 2 * (shape[1] - 1)], shape[2:]], 0))
    return tf.concat([pairs, kept[:, -1:]], axis=1)


def bicubic_blend(frames, scale=4):
    """``[B, N, h, w, C] -> [B, 2N-1, scale*h, scale*w, C]``: bicubic upscaling of every input
    frame, the average of its two neighbours for every frame between them.

    Not clipped (bicubic overshoots a little outside [0, 1]): it is the exact skip added by the
    residual model; clip, or round with :func:`zsm_tf.inference.to_uint8`, to show it.
    The result has ``frames``' float dtype (float32 for integer input: values keep their scale).
    """
    up = upscale_frames(frames, scale)
    return interleave(up, 0.5 * (up[:, :-1] + up[:, 1:]))


def upscale_frames(frames, scale=4):
    """``[B, N, h, w, C] -> [B, N, scale*h, scale*w, C]``: bicubic upscaling of every frame
    (float dtype of ``frames``; float32 for integer input)."""
    frames = tf.convert_to_tensor(frames)
    if not frames.dtype.is_floating:
        frames = tf.cast(frames, tf.float32)
    shape = tf.shape(frames)
    b, n, h, w, c = shape[0], shape[1], shape[2], shape[3], shape[4]
    up = tf.image.resize(tf.reshape(frames, [b * n, h, w, c]), [scale * h, scale * w],
                         method="bicubic")
    return tf.reshape(tf.cast(up, frames.dtype), [b, n, scale * h, scale * w, c])
