"""Bidirectional deformable ConvLSTM (Fig. 2, middle): temporal context over the whole sequence,
with the hidden and cell states deformably aligned to each new input before the LSTM step."""
from __future__ import annotations

import keras
import tensorflow as tf

from zsm_tf.layers.common import build_conv, conv2d, conv_concat, conv_params
from zsm_tf.layers.feature_extractor import FeaturePyramid
from zsm_tf.layers.frame_interpolation import FrameFeatureInterpolation


@keras.saving.register_keras_serializable(package="zsm_tf")
class StateAlignment(keras.layers.Layer):
    """The authors' ``Easy_PCD``: aligns a state to the current input.

    ``call(x, state)``, both [B, H, W, nf] -> [B, H, W, nf]: a pyramid of each (one pass over
    both, stacked on the batch axis), bidirectional PCD alignment, 1x1 fusion.
    """

    def __init__(self, nf=64, groups=8, deform_impl="auto", **kwargs):
        super().__init__(**kwargs)
        self.nf = nf
        self.groups = groups
        self.deform_impl = deform_impl
        self.pyramid = FeaturePyramid(nf, name="pyramid", dtype=self.dtype_policy)
        self.interpolation = FrameFeatureInterpolation(nf, groups, deform_impl,
                                                       name="interpolation", dtype=self.dtype_policy)

    def build(self, input_shape=None):
        self.pyramid.build()
        self.interpolation.build()
        self.built = True

    def call(self, x, state):
        b = tf.shape(x)[0]
        levels = self.pyramid(tf.concat([x, state], axis=0))
        return self.interpolation([lv[:b] for lv in levels], [lv[b:] for lv in levels])

    def torch_params(self, prefix):
        return {**self.pyramid.torch_params(f"{prefix}."),
                **self.interpolation.torch_params(f"{prefix}.")}

    def get_config(self):
        return {**super().get_config(), "nf": self.nf, "groups": self.groups,
                "deform_impl": self.deform_impl}


@keras.saving.register_keras_serializable(package="zsm_tf")
class DeformableConvLSTMCell(keras.layers.Layer):
    """One step of the deformable ConvLSTM, for ``keras.layers.RNN``.

    ``call(x_t [B, H, W, nf], [h, c] each [B, H, W, nf])`` -> (h', [h', c']). h and c are first
    aligned to x_t (``pcd_h``, ``pcd_c``); then gates = conv3x3([x_t, h]) split into input,
    forget, output, candidate: c' = f*c + i*g, h' = o*tanh(c'). H and W may be unknown.
    """

    def __init__(self, nf=64, groups=8, deform_impl="auto", **kwargs):
        super().__init__(**kwargs)
        self.nf = nf
        self.groups = groups
        self.deform_impl = deform_impl
        self.state_size = [nf, nf]
        self.output_size = nf
        self.pcd_h = StateAlignment(nf, groups, deform_impl, name="pcd_h", dtype=self.dtype_policy)
        self.pcd_c = StateAlignment(nf, groups, deform_impl, name="pcd_c", dtype=self.dtype_policy)
        self.conv = conv2d(4 * nf, name="conv", dtype=self.dtype_policy)

    def build(self, input_shape=None):
        self.pcd_h.build()
        self.pcd_c.build()
        build_conv(self.conv, 2 * self.nf)
        self.built = True

    def call(self, x, states, training=None):
        h, c = states
        h = self.pcd_h(x, h)
        c = self.pcd_c(x, c)
        i, f, o, g = tf.split(conv_concat(self.conv, [x, h]), 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        return h, [h, c]

    def torch_params(self, prefix):
        return {**self.pcd_h.torch_params(f"{prefix}.pcd_h"),
                **self.pcd_c.torch_params(f"{prefix}.pcd_c"),
                **conv_params(f"{prefix}.cell_list.0.conv", self.conv)}

    def get_config(self):
        return {**super().get_config(), "nf": self.nf, "groups": self.groups,
                "deform_impl": self.deform_impl}


@keras.saving.register_keras_serializable(package="zsm_tf")
class BiDeformableConvLSTM(keras.layers.Layer):
    """[B, T, H, W, nf] -> [B, T, H, W, nf].

    ONE cell (one set of weights) runs over the sequence and over the reversed sequence; both
    directions go through ``keras.layers.RNN`` together, stacked on the batch axis. The outputs
    [forward, re-reversed backward] are fused by a 1x1 convolution. Zero initial states.
    """

    def __init__(self, nf=64, groups=8, deform_impl="auto", **kwargs):
        super().__init__(**kwargs)
        self.nf = nf
        self.groups = groups
        self.deform_impl = deform_impl
        self.cell = DeformableConvLSTMCell(nf, groups, deform_impl, name="cell", dtype=self.dtype_policy)
        self.rnn = keras.layers.RNN(self.cell, return_sequences=True, name="rnn",
                                    dtype=self.dtype_policy)
        self.conv_1x1 = conv2d(nf, 1, name="conv_1x1", dtype=self.dtype_policy)

    def build(self, input_shape=None):
        self.rnn.build((None, None, None, None, self.nf))
        build_conv(self.conv_1x1, 2 * self.nf)
        self.built = True

    def call(self, x):
        shape = tf.shape(x)
        b, t, h, w = shape[0], shape[1], shape[2], shape[3]
        both = tf.concat([x, tf.reverse(x, axis=[1])], axis=0)
        zeros = tf.zeros_like(both[:, 0])
        out = self.rnn(both, initial_state=[zeros, zeros])
        fused = tf.concat([out[:b], tf.reverse(out[b:], axis=[1])], axis=-1)
        fused = self.conv_1x1(tf.reshape(fused, [b * t, h, w, 2 * self.nf]))
        return tf.reshape(fused, [b, t, h, w, self.nf])

    def torch_params(self, prefix):
        return {**self.cell.torch_params(f"{prefix}.forward_net"),
                **conv_params(f"{prefix}.conv_1x1", self.conv_1x1)}

    def get_config(self):
        return {**super().get_config(), "nf": self.nf, "groups": self.groups,
                "deform_impl": self.deform_impl}
