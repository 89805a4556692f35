"""Charbonnier loss, the paper's reconstruction loss: ``sqrt((y - x)^2 + eps^2)``, eps = 1e-3.

The authors' code sums over all pixels; here the loss is the *mean* over pixels (and over the
batch), which only rescales the gradient: Adam is invariant to that scale (up to its epsilon),
and the mean keeps the logged loss comparable across patch and batch sizes.
"""
from __future__ import annotations

import keras
import tensorflow as tf


def charbonnier_per_sample(y_true, y_pred, eps=1e-3):
    """Mean Charbonnier penalty of each sample: ``[B, ...] -> [B]`` (float32)."""
    y_true = tf.cast(y_true, tf.float32)
    y_pred = tf.cast(y_pred, tf.float32)
    d = y_pred - y_true
    pen = tf.sqrt(d * d + eps * eps)
    return tf.reduce_mean(tf.reshape(pen, [tf.shape(pen)[0], -1]), axis=1)


def charbonnier(y_true, y_pred, eps=1e-3):
    """Mean Charbonnier penalty over everything (a scalar)."""
    return tf.reduce_mean(charbonnier_per_sample(y_true, y_pred, eps))


@keras.saving.register_keras_serializable(package="zsm_tf")
class CharbonnierLoss(keras.losses.Loss):
    """Keras loss wrapper of :func:`charbonnier_per_sample` (for ``model.compile``)."""

    def __init__(self, eps=1e-3, name="charbonnier", **kwargs):
        super().__init__(name=name, **kwargs)
        self.eps = float(eps)

    def call(self, y_true, y_pred):
        return charbonnier_per_sample(y_true, y_pred, self.eps)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}
