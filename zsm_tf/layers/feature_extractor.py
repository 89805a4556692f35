"""Feature extraction (Fig. 2, left): per-frame features and their 3-level pyramid."""
from __future__ import annotations

import keras

from zsm_tf.layers.common import StridedConv2D, build_conv, conv2d, conv_lrelu, conv_params, lrelu
from zsm_tf.layers.residual_block import ResidualTrunk


@keras.saving.register_keras_serializable(package="zsm_tf")
class FeatureExtractor(keras.layers.Layer):
    """conv_first + LeakyReLU + ``front_rbs`` residual blocks. [B, H, W, 3] -> [B, H, W, nf]."""

    def __init__(self, nf=64, front_rbs=5, **kwargs):
        super().__init__(**kwargs)
        self.nf = nf
        self.front_rbs = front_rbs
        self.conv_first = conv2d(nf, name="conv_first", dtype=self.dtype_policy)
        self.feature_extraction = ResidualTrunk(nf, front_rbs, name="feature_extraction",
                                                dtype=self.dtype_policy)

    def build(self, input_shape=None):
        build_conv(self.conv_first, 3)
        self.feature_extraction.build()
        self.built = True

    def call(self, x):
        return self.feature_extraction(lrelu(self.conv_first(x)))

    def torch_params(self, prefix=""):
        return {**conv_params(f"{prefix}conv_first", self.conv_first),
                **self.feature_extraction.torch_params(f"{prefix}feature_extraction")}

    def get_config(self):
        return {**super().get_config(), "nf": self.nf, "front_rbs": self.front_rbs}


@keras.saving.register_keras_serializable(package="zsm_tf")
class FeaturePyramid(keras.layers.Layer):
    """L1 [B, H, W, nf] -> [L1, L2 [B, H/2, W/2, nf], L3 [B, H/4, W/4, nf]]: at each level a
    stride-2 conv (PyTorch padding) and a 3x3 conv, both followed by LeakyReLU."""

    def __init__(self, nf=64, **kwargs):
        super().__init__(**kwargs)
        self.nf = nf
        self.fea_L2_conv1 = StridedConv2D(nf, nf, name="fea_L2_conv1", dtype=self.dtype_policy)
        self.fea_L2_conv2 = conv2d(nf, name="fea_L2_conv2", dtype=self.dtype_policy)
        self.fea_L3_conv1 = StridedConv2D(nf, nf, name="fea_L3_conv1", dtype=self.dtype_policy)
        self.fea_L3_conv2 = conv2d(nf, name="fea_L3_conv2", dtype=self.dtype_policy)

    def build(self, input_shape=None):
        self.fea_L2_conv1.build()
        build_conv(self.fea_L2_conv2, self.nf)
        self.fea_L3_conv1.build()
        build_conv(self.fea_L3_conv2, self.nf)
        self.built = True

    def call(self, l1):
        l2 = conv_lrelu(self.fea_L2_conv2, lrelu(self.fea_L2_conv1(l1)))
        l3 = conv_lrelu(self.fea_L3_conv2, lrelu(self.fea_L3_conv1(l2)))
        return [l1, l2, l3]

    def torch_params(self, prefix=""):
        params = {}
        for name in ("fea_L2_conv1", "fea_L2_conv2", "fea_L3_conv1", "fea_L3_conv2"):
            params.update(conv_params(prefix + name, getattr(self, name)))
        return params

    def get_config(self):
        return {**super().get_config(), "nf": self.nf}
