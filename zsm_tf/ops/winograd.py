"""3x3 convolutions by Winograd's minimal filtering, F(m x m, 3 x 3), on the CPU, for inference.

A stride-1 3x3 convolution computes each m x m block of outputs from an (m+2) x (m+2) block of
input with (m+2)^2 multiplications per (input, output) channel pair instead of 9 m^2: 2.25x
fewer for ``tile=2``, 4x fewer for ``tile=4``, 5.1x for ``tile=6`` (Lavin & Gray, 2016). The
compiled op (``ZsmTf>WinogradConv3x3``, ``custom_ops/winograd_conv.h``, built with the
deformable op by :mod:`zsm_tf.ops.custom_op`) transforms, multiplies and transforms back one
row of tiles at a time in the cache. On a 2-core AVX2 CPU it ran the network's convolutions 1.5x (tile 2) to 1.9x
(tile 4) faster than TensorFlow's oneDNN kernels, and tile 6 another 5-19% faster than tile 4
(``bench/winograd.py``).

Accuracy, relative to the largest output: tile 2 agrees with the direct convolution to float32
rounding (~1e-6); tile 4's transforms lose about 3 bits (~6e-6), tile 6's about one more (~1e-5,
its points 0, +-1, +-2, +-1/2). The shipped model's held-out PSNR-Y is the same with all three
to 1e-5 dB (``bench/heldout.py --precision float32``).

Inference only: the op has no gradient and no XLA or GPU kernel. It is used where a
:func:`scope` is active while a model is traced (``zsm_tf.SpaceTimeUpscaler`` opens one, see
:func:`zsm_tf.precision.resolve_winograd`) and the convolution qualifies (:func:`eligible`);
everything else (training, export, XLA-compiled functions) keeps the stock convolution. The same
scope switches :func:`zsm_tf.ops.deform_conv.deform_conv2d` to the fused deformable op
(``custom_ops/deform_conv_op.cc``, also in bfloat16: ``fused_deform``, see
:func:`zsm_tf.precision.resolve_fused_deform`).

Shapes: x [N, H, W, C] (C a multiple of 8), kernel [3, 3, C, K], bias [K] -> [N, H, W, K].
"""
from __future__ import annotations

import contextlib
import threading

import keras
import tensorflow as tf

TILES = (2, 4, 6)
OP_NAME = "ZsmTf>WinogradConv3x3"

_state = threading.local()


@contextlib.contextmanager
def scope(tile: int, fused_deform=None):
    """Convolutions traced inside use Winograd F(tile, 3) where they qualify (0: none).
    ``fused_deform``: deformable convolutions traced inside use the fused CPU op
    (:func:`zsm_tf.ops.deform_conv.deform_conv2d`), and the motion base's midpoint its compiled
    op (:func:`zsm_tf.ops.flow.midpoint`); default: on when ``tile`` is."""
    if tile not in (0, *TILES):
        raise ValueError(f"winograd tile must be 0 (off), 2, 4 or 6, got {tile!r}")
    before = getattr(_state, "tile", 0), getattr(_state, "fused_deform", False)
    _state.tile = tile
    _state.fused_deform = bool(tile) if fused_deform is None else bool(fused_deform)
    try:
        yield
    finally:
        _state.tile, _state.fused_deform = before


def active_tile() -> int:
    """The tile of the innermost :func:`scope` in this thread (0: off)."""
    return getattr(_state, "tile", 0)


def fused_deform_active() -> bool:
    """Whether the innermost :func:`scope` in this thread turns the fused deformable op on."""
    return getattr(_state, "fused_deform", False)


def _op():
    from zsm_tf.ops import custom_op

    lib = custom_op.load()
    return None if lib is None else getattr(lib, "zsm_tf_winograd_conv3x3", None)


def available() -> bool:
    """True when the compiled op is loaded (builds the op library on the first call)."""
    return _op() is not None


def eligible(conv, x) -> bool:
    """Whether the Keras ``Conv2D`` ``conv`` applied to ``x`` (a tensor, or a list of tensors
    whose channel concatenation it convolves) can run as this op: a 3x3, stride-1, dilation-1,
    "same", channels-last, float32 convolution with a bias and no activation, each input with a
    multiple of 8 channels."""
    parts = list(x) if isinstance(x, (list, tuple)) else [x]
    kernel = getattr(conv, "kernel", None)
    if kernel is None or kernel.dtype != tf.float32 or any(p.dtype != tf.float32 for p in parts):
        return False
    layer_ok = (tuple(conv.kernel_size) == (3, 3) and tuple(conv.strides) == (1, 1)
                and tuple(conv.dilation_rate) == (1, 1) and conv.padding == "same"
                and conv.data_format == "channels_last" and conv.groups == 1
                and conv.use_bias
                and conv.activation in (None, keras.activations.linear))
    channels = [p.shape[-1] if p.shape.rank == 4 else None for p in parts]
    return layer_ok and all(c is not None and c % 8 == 0 for c in channels)


def winograd_conv3x3(x, kernel, bias, tile: int = 2, negative_slope: float = 1.0, shuffle: int = 1):
    """max(y, negative_slope * y) for y = conv3x3_same(x, kernel) + bias, by Winograd F(tile, 3).
    x [N, H, W, C] float32 (C a multiple of 8), or a list of such tensors whose channel
    concatenation is convolved (without making it) -> [N, H, W, K]. ``shuffle`` r > 1: the
    output pixel-shuffled in PyTorch's channel order as it is written
    (:class:`zsm_tf.layers.pixel_shuffle.PixelShuffle`), [N, rH, rW, K / r^2], K a multiple of
    8 r^2. Raises RuntimeError when the compiled op is unavailable (check :func:`available`)."""
    op = _op()
    if op is None:
        raise RuntimeError("the compiled Winograd convolution is unavailable "
                           "(zsm_tf.ops.custom_op.unavailable_reason())")
    parts = list(x) if isinstance(x, (list, tuple)) else [x]
    return op(parts, kernel, bias, tile=tile, negative_slope=negative_slope, shuffle=shuffle)
