"""Pyramid, Cascading and Deformable (PCD) alignment of two frames' features, both ways."""
from __future__ import annotations

import keras
import tensorflow as tf

from zsm_tf.layers.common import (
    build_conv,
    conv2d,
    conv_concat,
    conv_concat_lrelu,
    conv_lrelu,
    conv_params,
    lrelu,
    upsample2x_bilinear,
)
from zsm_tf.layers.deformable_conv import DeformableConv2D

# (name, input channels as a multiple of nf) of the plain convs, per direction suffix
_CONVS = (("L3_offset_conv1", 2), ("L3_offset_conv2", 1),
          ("L2_offset_conv1", 2), ("L2_offset_conv2", 2), ("L2_offset_conv3", 1), ("L2_fea_conv", 2),
          ("L1_offset_conv1", 2), ("L1_offset_conv2", 2), ("L1_offset_conv3", 1), ("L1_fea_conv", 2))
_DCNS = ("L3_dcnpack", "L2_dcnpack", "L1_dcnpack")


@keras.saving.register_keras_serializable(package="zsm_tf")
class PCDAlign(keras.layers.Layer):
    """``call(fea1, fea2)`` with pyramids [L1 [B,H,W,nf], L2 [B,H/2,W/2,nf], L3 [B,H/4,W/4,nf]].

    Direction 1 (weights ``*_1``) aligns fea1 using offsets predicted from [fea1, fea2];
    direction 2 (``*_2``) aligns fea2 from [fea2, fea1]. Coarse-to-fine: each level's offsets
    see the upsampled (and doubled) offsets of the level below. Returns [B, H, W, 2*nf] =
    [aligned fea1, aligned fea2].
    """

    def __init__(self, nf=64, groups=8, deform_impl="auto", **kwargs):
        super().__init__(**kwargs)
        self.nf = nf
        self.groups = groups
        self.deform_impl = deform_impl
        for d in (1, 2):
            for name, _ in _CONVS:
                setattr(self, f"{name}_{d}", conv2d(nf, name=f"{name}_{d}", dtype=self.dtype_policy))
            for name in _DCNS:
                setattr(self, f"{name}_{d}", DeformableConv2D(
                    nf, nf, groups, deform_impl=deform_impl, name=f"{name}_{d}",
                    dtype=self.dtype_policy))

    def build(self, input_shape=None):
        for d in (1, 2):
            for name, mult in _CONVS:
                build_conv(getattr(self, f"{name}_{d}"), mult * self.nf)
            for name in _DCNS:
                getattr(self, f"{name}_{d}").build()
        self.built = True

    def _align(self, fea1, fea2, d):
        """Aligns pyramid ``fea1`` to ``fea2`` with the direction-``d`` weights: [B, H, W, nf]."""
        L = lambda name: getattr(self, f"{name}_{d}")  # noqa: E731
        # L3
        off3 = conv_concat_lrelu(L("L3_offset_conv1"), [fea1[2], fea2[2]])
        off3 = conv_lrelu(L("L3_offset_conv2"), off3)
        fea3 = lrelu(L("L3_dcnpack")(fea1[2], off3))
        # L2
        off2 = conv_concat_lrelu(L("L2_offset_conv1"), [fea1[1], fea2[1]])
        off2 = conv_concat_lrelu(L("L2_offset_conv2"), [off2, upsample2x_bilinear(off3) * 2])
        off2 = conv_lrelu(L("L2_offset_conv3"), off2)
        fea2_ = L("L2_dcnpack")(fea1[1], off2)
        fea2_ = conv_concat_lrelu(L("L2_fea_conv"), [fea2_, upsample2x_bilinear(fea3)])
        # L1
        off1 = conv_concat_lrelu(L("L1_offset_conv1"), [fea1[0], fea2[0]])
        off1 = conv_concat_lrelu(L("L1_offset_conv2"), [off1, upsample2x_bilinear(off2) * 2])
        off1 = conv_lrelu(L("L1_offset_conv3"), off1)
        fea1_ = L("L1_dcnpack")(fea1[0], off1)
        return conv_concat(L("L1_fea_conv"), [fea1_, upsample2x_bilinear(fea2_)])

    def call(self, fea1, fea2):
        return tf.concat([self._align(fea1, fea2, 1), self._align(fea2, fea1, 2)], -1)

    def torch_params(self, prefix):
        params = {}
        for d in (1, 2):
            for name, _ in _CONVS:
                params.update(conv_params(f"{prefix}.{name}_{d}", getattr(self, f"{name}_{d}")))
            for name in _DCNS:
                params.update(getattr(self, f"{name}_{d}").torch_params(f"{prefix}.{name}_{d}"))
        return params

    def get_config(self):
        return {**super().get_config(), "nf": self.nf, "groups": self.groups,
                "deform_impl": self.deform_impl}
