"""Building bricks shared by the blocks: PyTorch-matching convolutions, activations, resizing,
and the map from the authors' (PyTorch) parameter names to our variables.

Every layer of the network builds its weights in ``build`` from channel counts it was given,
never lazily inside ``call``, so the same layer can run inside ``keras.layers.RNN``'s loop.
"""
from __future__ import annotations

import keras
import tensorflow as tf

LRELU_SLOPE = 0.1


def lrelu(x):
    """LeakyReLU with the reference network's slope (0.1)."""
    return tf.nn.leaky_relu(x, alpha=LRELU_SLOPE)


def torch_default_kernel_init():
    """PyTorch's default Conv2d weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


@keras.saving.register_keras_serializable(package="zsm_tf")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` that, traced inside :func:`zsm_tf.ops.winograd.scope` (inference on
    the CPU), runs as the compiled Winograd convolution when it qualifies
    (:func:`zsm_tf.ops.winograd.eligible`): the same outputs to float rounding, fewer
    multiplications. Same weights, config and outputs as the Keras layer otherwise.
    ``negative_slope``: None, or a LeakyReLU of that slope on the output (0: ReLU), fused into
    the Winograd op when it runs. [B, H, W, Cin] -> [B, H, W, filters]."""

    def call(self, inputs, negative_slope=None):
        from zsm_tf.ops import winograd

        tile = winograd.active_tile()
        if tile and winograd.eligible(self, inputs):
            slope = 1.0 if negative_slope is None else float(negative_slope)
            return winograd.winograd_conv3x3(inputs, self.kernel, self.bias, tile, slope)
        y = super().call(inputs)
        if negative_slope is None:
            return y
        return tf.nn.relu(y) if negative_slope == 0 else tf.nn.leaky_relu(y, alpha=negative_slope)


def conv_lrelu(conv, x):
    """``lrelu(conv(x))`` for a :class:`Conv2D`, the activation fused where it can be."""
    return conv(x, negative_slope=LRELU_SLOPE)


def conv_lrelu_shuffle(conv, shuffle, x):
    """``shuffle(lrelu(conv(x)))`` for a :class:`Conv2D` and a
    :class:`zsm_tf.layers.pixel_shuffle.PixelShuffle` (= ``shuffle(conv(x))`` then LeakyReLU):
    inside :func:`zsm_tf.ops.winograd.scope` the Winograd op writes the shuffled output itself
    and the shuffle's copy is never made. [B, H, W, Cin] -> [B, rH, rW, filters / r^2]."""
    from zsm_tf.ops import winograd

    tile, r = winograd.active_tile(), shuffle.upscale_factor
    if (tile and isinstance(conv, Conv2D) and winograd.eligible(conv, x)
            and conv.filters % (8 * r * r) == 0):
        return winograd.winograd_conv3x3(x, conv.kernel, conv.bias, tile, LRELU_SLOPE, shuffle=r)
    return shuffle(conv_lrelu(conv, x))


def conv_concat(conv, parts, negative_slope=None):
    """``conv(tf.concat(parts, -1))`` (then a LeakyReLU of ``negative_slope``, if given): inside
    :func:`zsm_tf.ops.winograd.scope` the Winograd op reads the parts itself and the
    concatenation is never made."""
    from zsm_tf.ops import winograd

    tile = winograd.active_tile()
    if tile and isinstance(conv, Conv2D) and winograd.eligible(conv, parts):
        slope = 1.0 if negative_slope is None else float(negative_slope)
        return winograd.winograd_conv3x3(parts, conv.kernel, conv.bias, tile, slope)
    return conv(tf.concat(parts, -1), negative_slope=negative_slope)


def conv_concat_lrelu(conv, parts):
    """``lrelu(conv(tf.concat(parts, -1)))``, see :func:`conv_concat`."""
    return conv_concat(conv, parts, LRELU_SLOPE)


def conv2d(filters, kernel_size=3, name=None, kernel_initializer=None, dtype=None):
    """Stride-1 convolution with PyTorch's symmetric ``kernel_size // 2`` padding ("same")."""
    return Conv2D(
        filters, kernel_size, padding="same", name=name, dtype=dtype,
        kernel_initializer=kernel_initializer or torch_default_kernel_init())


def build_conv(conv, in_channels):
    """Builds a Conv2D for NHWC input with ``in_channels`` channels and any spatial size."""
    if not conv.built:
        conv.build((None, None, None, in_channels))


@keras.saving.register_keras_serializable(package="zsm_tf")
class StridedConv2D(keras.layers.Layer):
    """3x3 stride-2 convolution that pads 1 pixel on every side first, as PyTorch's
    ``Conv2d(nf, nf, 3, 2, 1)`` does (TensorFlow's "same" would pad only bottom/right).

    [B, H, W, Cin] -> [B, ceil(H/2), ceil(W/2), filters]
    """

    def __init__(self, filters, in_channels, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.in_channels = in_channels
        self.conv = keras.layers.Conv2D(filters, 3, strides=2, padding="valid", name="conv",
                                        kernel_initializer=torch_default_kernel_init(),
                                        dtype=self.dtype_policy)

    def build(self, input_shape=None):
        self.conv.build((None, None, None, self.in_channels))
        self.built = True

    def call(self, x):
        return self.conv(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]))

    @property
    def kernel(self):
        return self.conv.kernel

    @property
    def bias(self):
        return self.conv.bias

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "in_channels": self.in_channels}


def upsample2x_bilinear(x):
    """x2 bilinear upsampling with half-pixel centres (PyTorch ``align_corners=False``).

    [B, H, W, C] -> [B, 2H, 2W, C], same dtype as ``x``.
    """
    size = tf.shape(x)[1:3] * 2
    return tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)


def conv_params(prefix, conv):
    """{authors' name: variable} for one convolution (kernel in OIHW there, HWIO here)."""
    return {f"{prefix}.weight": conv.kernel, f"{prefix}.bias": conv.bias}
