"""HR frame reconstruction (Fig. 2, right): residual trunk, two x2 pixel-shuffle upsamplings."""
from __future__ import annotations

import keras

from zsm_tf.layers.common import build_conv, conv2d, conv_lrelu, conv_lrelu_shuffle, conv_params
from zsm_tf.layers.pixel_shuffle import PixelShuffle
from zsm_tf.layers.residual_block import ResidualTrunk


@keras.saving.register_keras_serializable(package="zsm_tf")
class Reconstructor(keras.layers.Layer):
    """[B, H, W, nf] -> [B, 4H, 4W, 3]: ``back_rbs`` residual blocks, conv + pixel shuffle x2
    twice (with LeakyReLU), HRconv + LeakyReLU, conv_last."""

    def __init__(self, nf=64, back_rbs=40, **kwargs):
        super().__init__(**kwargs)
        self.nf = nf
        self.back_rbs = back_rbs
        p = self.dtype_policy
        self.recon_trunk = ResidualTrunk(nf, back_rbs, name="recon_trunk", dtype=p)
        self.upconv1 = conv2d(nf * 4, name="upconv1", dtype=p)
        self.upconv2 = conv2d(64 * 4, name="upconv2", dtype=p)
        self.pixel_shuffle = PixelShuffle(2, name="pixel_shuffle", dtype=p)
        self.HRconv = conv2d(64, name="HRconv", dtype=p)
        self.conv_last = conv2d(3, name="conv_last", dtype=p)

    def build(self, input_shape=None):
        self.recon_trunk.build()
        build_conv(self.upconv1, self.nf)
        build_conv(self.upconv2, self.nf)
        build_conv(self.HRconv, 64)
        build_conv(self.conv_last, 64)
        self.built = True

    def call(self, x):
        x = self.recon_trunk(x)
        # lrelu(shuffle(conv(x))) = shuffle(lrelu(conv(x))): the activation (and, in the
        # Winograd op, the shuffle) fuses into the conv
        x = conv_lrelu_shuffle(self.upconv1, self.pixel_shuffle, x)
        x = conv_lrelu_shuffle(self.upconv2, self.pixel_shuffle, x)
        return self.conv_last(conv_lrelu(self.HRconv, x))

    def torch_params(self, prefix=""):
        params = self.recon_trunk.torch_params(f"{prefix}recon_trunk")
        for name in ("upconv1", "upconv2", "HRconv", "conv_last"):
            params.update(conv_params(prefix + name, getattr(self, name)))
        return params

    def get_config(self):
        return {**super().get_config(), "nf": self.nf, "back_rbs": self.back_rbs}
