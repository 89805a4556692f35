"""Pixel shuffle with PyTorch's channel order (``nn.PixelShuffle``)."""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="zsm_tf")
class PixelShuffle(keras.layers.Layer):
    """[B, H, W, C*r*r] -> [B, H*r, W*r, C]; input channel ``c*r*r + i*r + j`` goes to output
    channel ``c`` at sub-pixel ``(i, j)`` (TensorFlow's ``depth_to_space`` orders them
    ``(i*r + j)*C + c``, which would scramble weights trained in PyTorch)."""

    def __init__(self, upscale_factor=2, **kwargs):
        super().__init__(**kwargs)
        self.upscale_factor = upscale_factor

    def call(self, x):
        r = self.upscale_factor
        shape = tf.shape(x)
        b, h, w = shape[0], shape[1], shape[2]
        c = x.shape[-1] // (r * r)
        x = tf.reshape(x, [b, h, w, c, r, r])
        x = tf.transpose(x, [0, 1, 4, 2, 5, 3])  # [B, H, i, W, j, C]
        return tf.reshape(x, [b, h * r, w * r, c])

    def compute_output_shape(self, input_shape):
        r = self.upscale_factor
        b, h, w, c = input_shape
        return (b, None if h is None else h * r, None if w is None else w * r, c // (r * r))

    def get_config(self):
        return {**super().get_config(), "upscale_factor": self.upscale_factor}
