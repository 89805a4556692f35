"""Upsampling initialisation: start training from "nearest x4 + frame blending", not from noise.

The authors' network has no global skip connection, so from a random start it spends its first
thousands of iterations learning to copy the input to the output at all. ``upsampling_init``
sets a few weights so that three feature channels carry the RGB frames through every block:

* feature extraction: conv_first copies RGB into channels 0..2; residual blocks leave them alone;
* interpolation: each direction's L1 deformable conv (offsets start at zero) and fea conv copy
  them, and the fusion averages the two directions: the missing frame starts as the blend of its
  neighbours, and training learns the offsets that align them;
* ConvLSTM: gates i, o open and f closed on those channels, the candidate is a small multiple of
  the input, and the 1x1 fusion rescales the two directions' average back to RGB;
* reconstruction: the two conv + pixel-shuffle stages are x2 nearest-neighbour upsamplers on
  those channels, HRconv and conv_last copy them out.

All other weights keep their random initialisation, so the network is as expressive as before;
it merely starts at a sensible output (nearest-neighbour x4 with blended new frames) instead
of a constant.
"""
from __future__ import annotations

import numpy as np

_RGB = 3
_LSTM_SCALE = 0.03  # candidate = tanh(0.03 * x): linear within 0.03% for x in [0, 1]
_GATE_BIAS = 10.0  # sigmoid(10) = 0.99995


def _center_copy(kernel, out_channels, in_channels, scale=1.0):
    """Rows ``out_channels`` of a HWIO kernel become ``scale`` x centre tap of ``in_channels``."""
    k = kernel.copy()
    kh, kw = k.shape[:2]
    k[..., out_channels] = 0
    for o, i in zip(out_channels, in_channels):
        k[kh // 2, kw // 2, i, o] = scale
    return k


def _set(var, value):
    var.assign(np.asarray(value, dtype=var.dtype))


def _copy_conv(conv, out_channels, in_channels, scale=1.0):
    _set(conv.kernel, _center_copy(conv.kernel.numpy(), out_channels, in_channels, scale))
    bias = conv.bias.numpy()
    bias[list(out_channels)] = 0
    _set(conv.bias, bias)


def _keep_channels(trunk):
    """Residual blocks: conv2 writes nothing into the RGB channels, so x passes unchanged."""
    for block in trunk.blocks:
        _copy_conv(block.conv2, range(_RGB), range(_RGB), scale=0.0)


def _upsampling_shuffle_conv(conv, in_channels=range(_RGB)):
    """conv + PixelShuffle(2) (PyTorch channel order c*4 + i*2 + j) = x2 nearest-neighbour
    upsampling of ``in_channels`` into output channels 0..2. (Bilinear weights would be closer
    in the interior but the zero padding darkens the borders; nearest needs only centre taps.)"""
    for c, src in enumerate(in_channels):
        rows = [c * 4 + s for s in range(4)]
        _copy_conv(conv, rows, [src] * 4)


def _interpolation(interp):
    pcd = interp.pcd_align
    nf = interp.nf
    rgb = range(_RGB)
    for d in (1, 2):
        dcn = getattr(pcd, f"L1_dcnpack_{d}")
        # the mask starts at sigmoid(0) = 0.5: a centre tap of 2 copies the input
        _set(dcn.kernel, _center_copy(dcn.kernel.numpy(), rgb, rgb, 2.0))
        b = dcn.bias.numpy()
        b[:_RGB] = 0
        _set(dcn.bias, b)
        _copy_conv(getattr(pcd, f"L1_fea_conv_{d}"), rgb, rgb)
    fusion = interp.fusion
    k = np.array(fusion.kernel.numpy())
    k[..., :_RGB] = 0
    for c in rgb:
        k[0, 0, c, c] = 0.5        # direction 1: the first frame aligned
        k[0, 0, nf + c, c] = 0.5   # direction 2: the second frame aligned
    _set(fusion.kernel, k)
    b = fusion.bias.numpy()
    b[:_RGB] = 0
    _set(fusion.bias, b)


def _convlstm(lstm):
    cell = lstm.cell
    nf = cell.nf
    k = cell.conv.kernel.numpy()
    b = cell.conv.bias.numpy()
    for c in range(_RGB):
        i, f, o, g = c, nf + c, 2 * nf + c, 3 * nf + c
        k[..., [i, f, o, g]] = 0
        b[[i, f, o]] = [_GATE_BIAS, -_GATE_BIAS, _GATE_BIAS]
        b[g] = 0
        k[1, 1, c, g] = _LSTM_SCALE  # input x_t channel c
    _set(cell.conv.kernel, k)
    _set(cell.conv.bias, b)
    # h = o * tanh(i * tanh(s x)) ~ s x; fuse the two directions' average and undo the scale
    k = lstm.conv_1x1.kernel.numpy()
    k[..., :_RGB] = 0
    for c in range(_RGB):
        k[0, 0, c, c] = 0.5 / _LSTM_SCALE
        k[0, 0, nf + c, c] = 0.5 / _LSTM_SCALE
    _set(lstm.conv_1x1.kernel, k)
    b = lstm.conv_1x1.bias.numpy()
    b[:_RGB] = 0
    _set(lstm.conv_1x1.bias, b)


def upsampling_init(model):
    """Sets ``model`` (a built :class:`~zsm_tf.model.ZoomingSlowMo`) to start as nearest x4
    upsampling with frame blending for the new frames; returns the model."""
    if getattr(model, "residual", "none") != "none":
        raise ValueError(f"model has residual={model.residual!r}: it already starts as bicubic "
                         "x4 + frame blending; use the random initialisation")
    rgb = range(_RGB)
    fe = model.feature_extractor
    _copy_conv(fe.conv_first, rgb, rgb)
    _keep_channels(fe.feature_extraction)
    _interpolation(model.interpolation)
    _convlstm(model.convlstm)
    rec = model.reconstructor
    _keep_channels(rec.recon_trunk)
    _upsampling_shuffle_conv(rec.upconv1)
    _upsampling_shuffle_conv(rec.upconv2)
    _copy_conv(rec.HRconv, rgb, rgb)
    _copy_conv(rec.conv_last, rgb, rgb)
    return model


_LRELU_GAIN = float(np.sqrt(2.0 / (1.0 + 0.1 ** 2)))  # He gain for LeakyReLU(0.1)
_RESIDUAL_BLOCK_SCALE = 0.1  # EDVR / the authors' ResidualBlock_noBN initialisation


def kaiming_init(model, seed=0):
    """Re-initialises every convolution kernel of ``model`` with He-normal weights (fan-in,
    LeakyReLU(0.1) gain; residual blocks scaled by 0.1, as EDVR's ``initialize_weights``) and
    zero biases; kernels that start at zero stay zero (the deformable offset/mask convs, and
    ``conv_last`` of a ``residual="bicubic"`` model). Returns the model.

    Why: PyTorch's default convolution init, which the reference network keeps for most layers,
    scales each layer's activations by about 0.5, so after the ~30 convolutions between input
    and output a random network's signal (and gradient) is ~1e-3 of its input, and the first
    thousands of steps go into escaping that. He init keeps the scale through the depth.
    """
    rng = np.random.default_rng(seed)
    kernels = {v.path[:-len("kernel")]: v for v in model.trainable_variables
               if len(v.shape) == 4 and v.path.endswith("kernel")}
    biases = {v.path: v for v in model.trainable_variables if v.path.endswith("bias")}
    for prefix, kernel in kernels.items():
        value = kernel.numpy()
        if not value.any():
            continue
        kh, kw, cin, _ = value.shape
        std = _LRELU_GAIN / np.sqrt(kh * kw * cin)
        if "/block_" in prefix:
            std *= _RESIDUAL_BLOCK_SCALE
        _set(kernel, rng.normal(0.0, std, size=value.shape))
        bias = biases.get(prefix + "bias")
        if bias is not None:
            _set(bias, np.zeros(bias.shape))
    return model
