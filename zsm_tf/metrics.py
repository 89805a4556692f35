"""PSNR and SSIM on the Y channel, as in the paper (and the authors' test script).

Y is ITU-R BT.601 luma in the 16..235 range, MATLAB ``rgb2ycbcr``'s first channel, computed in
floating point (no rounding)::

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255        (R, G, B in [0, 255])

PSNR is :func:`psnr` (the one PSNR: also training's validation, on RGB in [0, 1]); SSIM is
``tf.image.ssim``; both with ``max_val=255`` on Y (SSIM with the usual 11x11 Gaussian window,
sigma 1.5, K1=0.01, K2=0.03, 'valid' filtering, i.e. Wang et al.'s MATLAB ``ssim_index``), after
cropping ``crop_border`` pixels off each side.
"""
from __future__ import annotations

import numpy as np

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], np.float64) / 255.0


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """``[..., H, W, 3]`` RGB (uint8, or floats in [0, 255]) -> float64 ``[..., H, W]`` Y in [16, 235]."""
    img = np.asarray(img, np.float64)
    return img @ _Y_WEIGHTS + 16.0


def _prep(a, b, crop_border):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    ya, yb = rgb_to_y(a), rgb_to_y(b)
    if crop_border:
        c = int(crop_border)
        ya, yb = ya[..., c:-c, c:-c], yb[..., c:-c, c:-c]
    return ya[..., None].astype(np.float32), yb[..., None].astype(np.float32)


def psnr(pred, target, max_val=1.0):
    """Mean PSNR (dB) over the images of ``[..., H, W, C]`` (each image's MSE over H, W, C), on
    predictions clipped to ``[0, max_val]``; an MSE below 1e-10 counts as 1e-10. A TF scalar."""
    import tensorflow as tf

    pred = tf.clip_by_value(tf.cast(pred, tf.float32), 0.0, max_val)
    target = tf.cast(target, tf.float32)
    mse = tf.reduce_mean(tf.square(pred - target), axis=[-3, -2, -1])
    return tf.reduce_mean(10.0 * tf.math.log(max_val ** 2 / tf.maximum(mse, 1e-10)) /
                          tf.math.log(10.0))


def psnr_y(a: np.ndarray, b: np.ndarray, crop_border: int = 0) -> float:
    """PSNR (dB) between two RGB images on Y (:func:`psnr`); ``inf`` when they are identical."""
    ya, yb = _prep(a, b, crop_border)
    mse = float(np.mean((ya.astype(np.float64) - yb.astype(np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(psnr(ya, yb, max_val=255.0))


def ssim_y(a: np.ndarray, b: np.ndarray, crop_border: int = 0) -> float:
    """SSIM between two RGB images on Y (images at least 11x11 after the crop)."""
    import tensorflow as tf

    ya, yb = _prep(a, b, crop_border)
    if min(ya.shape[-3:-1]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 after cropping, got {ya.shape[-3:-1]}")
    return float(tf.image.ssim(ya, yb, max_val=255.0, filter_size=11, filter_sigma=1.5,
                               k1=0.01, k2=0.03))
