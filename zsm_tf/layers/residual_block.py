"""Residual block without batch norm: x + conv2(relu(conv1(x))). [B, H, W, nf] -> same."""
from __future__ import annotations

import keras

from zsm_tf.layers.common import build_conv, conv2d, conv_params


def _rb_init():
    """kaiming_normal(fan_in) scaled by 0.1, as the reference initialises its residual blocks
    (a new initializer per conv: a shared one would give every block the same weights)."""
    return keras.initializers.VarianceScaling(scale=0.02, mode="fan_in",
                                              distribution="untruncated_normal")


@keras.saving.register_keras_serializable(package="zsm_tf")
class ResidualBlockNoBN(keras.layers.Layer):
    """---Conv-ReLU-Conv-+-  with an identity skip. [B, H, W, nf] -> [B, H, W, nf]."""

    def __init__(self, nf=64, **kwargs):
        super().__init__(**kwargs)
        self.nf = nf
        self.conv1 = conv2d(nf, name="conv1", kernel_initializer=_rb_init(), dtype=self.dtype_policy)
        self.conv2 = conv2d(nf, name="conv2", kernel_initializer=_rb_init(), dtype=self.dtype_policy)

    def build(self, input_shape=None):
        build_conv(self.conv1, self.nf)
        build_conv(self.conv2, self.nf)
        self.built = True

    def call(self, x):
        return x + self.conv2(self.conv1(x, negative_slope=0.0))

    def torch_params(self, prefix):
        return {**conv_params(f"{prefix}.conv1", self.conv1),
                **conv_params(f"{prefix}.conv2", self.conv2)}

    def get_config(self):
        return {**super().get_config(), "nf": self.nf}


@keras.saving.register_keras_serializable(package="zsm_tf")
class ResidualTrunk(keras.layers.Layer):
    """``num_blocks`` residual blocks in sequence. [B, H, W, nf] -> [B, H, W, nf]."""

    def __init__(self, nf=64, num_blocks=5, **kwargs):
        super().__init__(**kwargs)
        self.nf = nf
        self.num_blocks = num_blocks
        self.blocks = [ResidualBlockNoBN(nf, name=f"block_{i}", dtype=self.dtype_policy)
                       for i in range(num_blocks)]
        for i, block in enumerate(self.blocks):  # Keras lists are invisible to tf.train.Checkpoint
            self._track_trackable(block, name=f"block_{i}")

    def build(self, input_shape=None):
        for block in self.blocks:
            block.build()
        self.built = True

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return x

    def torch_params(self, prefix):
        params = {}
        for i, block in enumerate(self.blocks):
            params.update(block.torch_params(f"{prefix}.{i}"))
        return params

    def get_config(self):
        return {**super().get_config(), "nf": self.nf, "num_blocks": self.num_blocks}
