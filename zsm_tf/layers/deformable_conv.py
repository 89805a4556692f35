"""Deformable convolution whose offsets and mask come from other features (the authors' ``DCN_sep``)."""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from zsm_tf.layers.common import build_conv, conv2d
from zsm_tf.ops.deform_conv import deform_conv2d_from_logits, resolve_impl


@keras.saving.register_keras_serializable(package="zsm_tf")
class DeformableConv2D(keras.layers.Layer):
    """Modulated 3x3 deformable convolution (DCNv2), offsets predicted from a second input.

    ``call(x, features)``: x [B, H, W, in_channels] is sampled; features [B, H, W, in_channels]
    go through ``conv_offset_mask`` (3x3, 3*dg*9 channels): the first 2*dg*9 are the (dy, dx)
    offsets, the last dg*9 pass a sigmoid to give the mask. Returns [B, H, W, filters].
    """

    def __init__(self, filters, in_channels, deformable_groups=8, kernel_size=3,
                 deform_impl="auto", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.in_channels = in_channels
        self.deformable_groups = deformable_groups
        self.kernel_size = kernel_size
        self.deform_impl = deform_impl
        taps = kernel_size * kernel_size
        # the reference zero-initialises the offset/mask branch: training starts as a plain conv
        self.conv_offset_mask = conv2d(3 * deformable_groups * taps, kernel_size,
                                       name="conv_offset_mask", kernel_initializer="zeros",
                                       dtype=self.dtype_policy)

    def build(self, input_shape=None):
        k = self.kernel_size
        stdv = 1.0 / math.sqrt(self.in_channels * k * k)  # the reference DCNv2 reset_parameters
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, self.in_channels, self.filters),
            initializer=keras.initializers.RandomUniform(-stdv, stdv))
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        build_conv(self.conv_offset_mask, self.in_channels)
        self.built = True

    def call(self, x, features):
        out = self.conv_offset_mask(features)
        return deform_conv2d_from_logits(x, out, tf.cast(self.kernel, x.dtype),
                                         tf.cast(self.bias, x.dtype), strides=1,
                                         padding=self.kernel_size // 2, dilation=1,
                                         deformable_groups=self.deformable_groups,
                                         impl=self.deform_impl)

    @property
    def uses_custom_op(self):
        """True when ``deform_impl`` resolves to the compiled op (builds it on the first call)."""
        return resolve_impl(self.deform_impl) == "custom_op"

    # The compiled op has no XLA kernel: Keras must not jit-compile a model using it. Resolved
    # when Keras asks (model.compile), not in the constructor, which must not build the op.
    @property
    def supports_jit(self):
        return self.__dict__.get("_supports_jit", True) and (
            getattr(self, "deform_impl", "gather") == "gather" or not self.uses_custom_op)

    @supports_jit.setter
    def supports_jit(self, value):
        self.__dict__["_supports_jit"] = bool(value)

    def torch_params(self, prefix):
        return {f"{prefix}.weight": self.kernel, f"{prefix}.bias": self.bias,
                f"{prefix}.conv_offset_mask.weight": self.conv_offset_mask.kernel,
                f"{prefix}.conv_offset_mask.bias": self.conv_offset_mask.bias}

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "in_channels": self.in_channels,
                "deformable_groups": self.deformable_groups, "kernel_size": self.kernel_size,
                "deform_impl": self.deform_impl}
