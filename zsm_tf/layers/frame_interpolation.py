"""Frame feature temporal interpolation (Fig. 2): the missing frame's LR features from its two
neighbours, by PCD alignment in both directions and a 1x1 fusion."""
from __future__ import annotations

import keras

from zsm_tf.layers.common import build_conv, conv2d, conv_params
from zsm_tf.layers.pcd_alignment import PCDAlign


@keras.saving.register_keras_serializable(package="zsm_tf")
class FrameFeatureInterpolation(keras.layers.Layer):
    """``call(pyr1, pyr2)``, pyramids of two frames (see :class:`PCDAlign`) -> [B, H, W, nf]."""

    def __init__(self, nf=64, groups=8, deform_impl="auto", **kwargs):
        super().__init__(**kwargs)
        self.nf = nf
        self.groups = groups
        self.deform_impl = deform_impl
        self.pcd_align = PCDAlign(nf, groups, deform_impl, name="pcd_align", dtype=self.dtype_policy)
        self.fusion = conv2d(nf, 1, name="fusion", dtype=self.dtype_policy)

    def build(self, input_shape=None):
        self.pcd_align.build()
        build_conv(self.fusion, 2 * self.nf)
        self.built = True

    def call(self, pyr1, pyr2):
        return self.fusion(self.pcd_align(pyr1, pyr2))

    def torch_params(self, prefix=""):
        return {**self.pcd_align.torch_params(f"{prefix}pcd_align"),
                **conv_params(f"{prefix}fusion", self.fusion)}

    def get_config(self):
        return {**super().get_config(), "nf": self.nf, "groups": self.groups,
                "deform_impl": self.deform_impl}
