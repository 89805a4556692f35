"""Modulated deformable convolution (DCNv2), NHWC.

The convolution is split in two: a *deformable im2col* that bilinearly samples the input at the
offset positions and multiplies by the modulation mask, producing columns
``[B, Ho, Wo, kh*kw*C]`` (tap-major, then channel), and one GEMM of those columns with the kernel
reshaped to ``[kh*kw*C, Cout]``. The sampling has two implementations:

* ``"gather"``: stock TensorFlow ops only (``tf.gather``), differentiable by autodiff, XLA-friendly
  and exportable to a SavedModel that stock TensorFlow Serving can run;
* ``"custom_op"``: the compiled kernels of ``custom_ops/`` (see :mod:`zsm_tf.ops.custom_op`).

At CPU inference (inside the upscaler's :func:`zsm_tf.ops.winograd.scope`) the compiled library's
fused op (``ZsmTf>DeformableConv2D``) does the sampling and the GEMM together in float32, block by
block in the cache; it has no gradient.
``"auto"`` uses the compiled op when it is loaded (and, with a GPU visible, has CUDA kernels and
op determinism is off), and the gather path otherwise; it is resolved when the op is first used,
never when a layer is built.

Sampling semantics (those of the authors' DCNv2 and of ``torchvision.ops.deform_conv2d``): tap
``k = i*kw + j`` of deformable group ``g`` at output pixel ``(ho, wo)`` samples at
``y = ho*sh - ph + i*dh + offsets[..., 2*(g*K+k)]`` and ``x = wo*sw - pw + j*dw + offsets[..., 2*(g*K+k)+1]``;
pixels outside the image are zero, so a sample with ``y <= -1``, ``y >= H``, ``x <= -1`` or
``x >= W`` is zero. Input channels are split into ``deformable_groups`` equal consecutive groups.
"""
from __future__ import annotations

import tensorflow as tf

from zsm_tf.ops.conv_args import pair

IMPLS = ("auto", "gather", "custom_op")


def determinism_enabled() -> bool:
    """True after ``tf.config.experimental.enable_op_determinism()``."""
    from tensorflow.python.framework import config as tf_config

    return bool(tf_config.is_op_determinism_enabled())


def deterministic_impl(impl: str) -> str:
    """The implementation to use for a run that must be deterministic (``train.py
    --deterministic``): where a GPU is visible, ``"custom_op"`` is refused (its CUDA input
    gradient sums with float ``atomicAdd``) and ``"auto"`` becomes ``"gather"`` with a warning;
    elsewhere (the CPU kernels are deterministic) ``impl`` is returned unchanged.

    Raises:
      ValueError: ``impl`` is ``"custom_op"`` and a GPU is visible.
    """
    from zsm_tf.ops import custom_op

    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "gather" or not custom_op.gpus_visible():
        return impl
    if impl == "custom_op":
        raise ValueError("deform_impl='custom_op' is not deterministic on GPU (its input gradient "
                         "sums with float atomicAdd): use deform_impl='gather' or 'auto' for a "
                         "deterministic run")
    custom_op._warn_once("deterministic", "zsm_tf: op determinism is on and a GPU is visible: "
                         "deform_impl='auto' uses the gather path (the compiled op's CUDA input "
                         "gradient is not deterministic)")
    return "gather"


def resolve_impl(impl: str) -> str:
    """Maps ``"auto"`` to ``"custom_op"`` or ``"gather"``; builds and loads the op on first use.

    ``"auto"`` is ``"gather"`` when the compiled op is unavailable; when a GPU is visible and the
    op has no CUDA kernels (one warning: it would run on the CPU, copying every input to the host
    and back); and when op determinism is on and a GPU is visible (see
    :func:`deterministic_impl`). Otherwise it is ``"custom_op"``.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl != "auto":
        return impl
    from zsm_tf.ops import custom_op

    if determinism_enabled() and deterministic_impl(impl) == "gather":
        return "gather"
    if not custom_op.custom_op_available():
        return "gather"
    if custom_op.gpus_visible() and not custom_op.has_cuda_kernels():
        why = custom_op.build_info().get("cuda_skipped") or "it was built without them"
        custom_op._warn_once(
            "auto-no-cuda",
            f"zsm_tf: GPUs are visible but the compiled deformable op has no CUDA kernels "
            f"({why}), so impl='auto' uses the gather path, which runs on the GPU. For the CUDA "
            f"kernels install the gpu extra (pip install \"zsm-tf[gpu]\": tensorflow[and-cuda], "
            f"which brings NVRTC {(custom_op.tf_cuda_version() or '12').split('.')[0]}.x; no CUDA "
            f"toolkit needed) and run again (the op rebuilds); see docs/custom_op.md.")
        return "gather"
    return "custom_op"


def deformable_im2col_gather(inputs, offsets, mask, kernel_size, strides=1, padding=0,
                             dilation=1, deformable_groups=1):
    """Deformable, modulated im2col with stock TF ops.

    Args:
      inputs: [B, H, W, C].
      offsets: [B, Ho, Wo, 2*dg*kh*kw], (dy, dx) per (group, tap).
      mask: [B, Ho, Wo, dg*kh*kw] or None (ones).
    Returns:
      columns [B, Ho, Wo, kh*kw*C]: tap-major, channel-minor (channel c = g*(C/dg) + cg).
    """
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(strides, "strides")
    ph, pw = pair(padding, "padding")
    dh, dw = pair(dilation, "dilation")
    dg = int(deformable_groups)
    K = kh * kw
    dtype = inputs.dtype
    shape = tf.shape(inputs)
    B, H, W = shape[0], shape[1], shape[2]
    C = inputs.shape[-1]
    if C is None:
        raise ValueError("deform_conv2d needs a static channel count")
    if C % dg:
        raise ValueError(f"input channels ({C}) must be divisible by deformable_groups ({dg})")
    Cg = C // dg
    oshape = tf.shape(offsets)
    Ho, Wo = oshape[1], oshape[2]

    # [B, Ho, Wo, dg, K, 2] -> [B, Ho, Wo, K, dg, 2] so the gathered columns need no transpose.
    off = tf.reshape(offsets, [B, Ho, Wo, dg, K, 2])
    off = tf.transpose(off, [0, 1, 2, 4, 3, 5])
    # positions and bilinear weights in at least float32, even under a float16/bfloat16 policy
    pdtype = tf.float64 if dtype == tf.float64 else tf.float32
    off = tf.cast(off, pdtype)
    tap_y = tf.cast(tf.repeat(tf.range(kh) * dh, kw), pdtype)  # [K]
    tap_x = tf.cast(tf.tile(tf.range(kw) * dw, [kh]), pdtype)  # [K]
    base_y = tf.cast(tf.range(Ho) * sh - ph, pdtype)
    base_x = tf.cast(tf.range(Wo) * sw - pw, pdtype)
    # sample positions [B, Ho, Wo, K, dg]
    y = base_y[None, :, None, None, None] + tap_y[None, None, None, :, None] + off[..., 0]
    x = base_x[None, None, :, None, None] + tap_x[None, None, None, :, None] + off[..., 1]

    y0 = tf.floor(y)
    x0 = tf.floor(x)
    ly = y - y0
    lx = x - x0
    hy = 1 - ly
    hx = 1 - lx
    y0 = tf.cast(y0, tf.int32)
    x0 = tf.cast(x0, tf.int32)
    y1 = y0 + 1
    x1 = x0 + 1

    flat = tf.reshape(inputs, [-1, Cg])  # row = ((b*H + y)*W + x)*dg + g
    b_idx = tf.range(B)[:, None, None, None, None]
    g_idx = tf.range(dg)[None, None, None, None, :]

    # a sample at y <= -1, y >= H, x <= -1 or x >= W is zero, with zero gradient (as torchvision)
    inside = (y > -1) & (y < tf.cast(H, pdtype)) & (x > -1) & (x < tf.cast(W, pdtype))

    def corner(yy, xx, weight):
        valid = inside & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        yc = tf.clip_by_value(yy, 0, H - 1)
        xc = tf.clip_by_value(xx, 0, W - 1)
        idx = ((b_idx * H + yc) * W + xc) * dg + g_idx
        w = tf.where(valid, weight, tf.zeros_like(weight))
        return idx, w

    corners = [corner(y0, x0, hy * hx), corner(y0, x1, hy * lx),
               corner(y1, x0, ly * hx), corner(y1, x1, ly * lx)]
    idx = tf.stack([c[0] for c in corners], axis=0)  # [4, B, Ho, Wo, K, dg]
    w = tf.stack([c[1] for c in corners], axis=0)
    if mask is not None:
        m = tf.reshape(tf.cast(mask, pdtype), [B, Ho, Wo, dg, K])
        w = w * tf.transpose(m, [0, 1, 2, 4, 3])[None]
    w = tf.cast(w, dtype)
    vals = tf.gather(flat, idx)  # [4, B, Ho, Wo, K, dg, Cg]
    cols = tf.reduce_sum(vals * w[..., None], axis=0)
    return tf.reshape(cols, [B, Ho, Wo, K * C])


def deformable_im2col(inputs, offsets, mask, kernel_size, strides=1, padding=0, dilation=1,
                      deformable_groups=1, impl="auto", cast_back=True):
    """Deformable im2col with the chosen implementation; see :func:`deformable_im2col_gather`.
    ``cast_back=False`` lets the compiled op return its float32 columns for float16/bfloat16
    inputs (the gather path keeps the inputs' dtype)."""
    impl = resolve_impl(impl)
    if impl == "custom_op":
        from zsm_tf.ops import custom_op

        return custom_op.deformable_im2col(
            inputs, offsets, mask, kernel_size=pair(kernel_size, "kernel_size"),
            strides=pair(strides, "strides"), padding=pair(padding, "padding"),
            dilation=pair(dilation, "dilation"), deformable_groups=int(deformable_groups),
            cast_back=cast_back)
    return deformable_im2col_gather(inputs, offsets, mask, kernel_size, strides, padding,
                                    dilation, deformable_groups)


def _fused_op(impl: str, dtype, packed: bool = False):
    """The compiled fused deformable convolution (``ZsmTf>DeformableConv2D``: sampling and GEMM
    in one pass, per block of pixels in the cache; CPU, float32 compute, no gradient) where it
    applies: traced inside a CPU-inference :func:`zsm_tf.ops.winograd.scope` that turns it on
    (the upscaler's), float32/bfloat16/float16 inputs, ``impl`` resolving to the compiled op.
    Else None."""
    from zsm_tf.ops import winograd

    if (not winograd.fused_deform_active() or dtype not in (tf.float32, tf.bfloat16, tf.float16)
            or resolve_impl(impl) != "custom_op"):
        return None
    from zsm_tf.ops import custom_op

    lib = custom_op.load()
    name = "zsm_tf_deformable_conv2d_packed" if packed else "zsm_tf_deformable_conv2d"
    return None if lib is None else getattr(lib, name, None)


def _call_fused(op, inputs, sampling, kernel, bias, strides, padding, dilation, dg):
    """The fused op (``ZsmTf>DeformableConv2D{,Packed}``) on ``inputs`` [B, H, W, C] and its
    ``sampling`` tensors (offsets and mask, or the packed offset/mask logits): all bfloat16, they
    go in as they are (the op reads bfloat16, computes in float32 and rounds its output as a cast
    would: no float32 copies of them); else they are cast to float32 and the output back. The
    kernel and bias are float32."""
    kernel = tf.convert_to_tensor(kernel)
    kh, kw, _, cout = kernel.shape
    tensors = [inputs, *sampling]
    dtype = tf.bfloat16 if all(t.dtype == tf.bfloat16 for t in tensors) else tf.float32
    tensors = [tf.cast(t, dtype) for t in tensors]
    b32 = tf.zeros([cout]) if bias is None else tf.cast(tf.convert_to_tensor(bias), tf.float32)
    out = op(*tensors, tf.cast(kernel, tf.float32), b32, kernel_size=[kh, kw],
             strides=list(pair(strides, "strides")), padding=list(pair(padding, "padding")),
             dilation=list(pair(dilation, "dilation")), deformable_groups=dg)
    return tf.cast(out, inputs.dtype)


def deform_conv2d(inputs, offsets, mask, kernel, bias=None, *, strides=1, padding=0, dilation=1,
                  deformable_groups=1, impl="auto"):
    """Modulated deformable convolution (DCNv2).

    Args:
      inputs: [B, H, W, C].
      offsets: [B, Ho, Wo, 2*dg*kh*kw]; channel 2*(g*kh*kw+k) is the y (row) offset of tap k
        (row-major over the window) in deformable group g, channel 2*(g*kh*kw+k)+1 the x offset.
      mask: [B, Ho, Wo, dg*kh*kw] modulation (channel g*kh*kw+k), or None for ones (DCNv1).
      kernel: [kh, kw, C, Cout]; bias: [Cout] or None.
      strides, padding (pixels on each side), dilation: int or (h, w).
      deformable_groups: dg, dividing C.
      impl: "auto" | "gather" | "custom_op".
    Returns:
      [B, Ho, Wo, Cout] with Ho = (H + 2*ph - dh*(kh-1) - 1)//sh + 1 (likewise Wo).
    """
    inputs = tf.convert_to_tensor(inputs)
    kernel = tf.convert_to_tensor(kernel, dtype=inputs.dtype)
    offsets = tf.convert_to_tensor(offsets, dtype=inputs.dtype)
    if mask is not None:
        mask = tf.convert_to_tensor(mask, dtype=inputs.dtype)
    kh, kw, cin, cout = kernel.shape
    if inputs.shape[-1] is not None and cin != inputs.shape[-1]:
        raise ValueError(f"kernel expects {cin} input channels, inputs have {inputs.shape[-1]}")
    K = kh * kw
    dg = int(deformable_groups)
    if dg < 1 or cin % dg:
        raise ValueError(f"input channels ({cin}) must be divisible by deformable_groups ({dg})")
    if offsets.shape[-1] is not None and offsets.shape[-1] != 2 * dg * K:
        raise ValueError(f"offsets need 2*dg*kh*kw = {2 * dg * K} channels, got {offsets.shape[-1]}")
    if mask is not None and mask.shape[-1] is not None and mask.shape[-1] != dg * K:
        raise ValueError(f"mask needs dg*kh*kw = {dg * K} channels, got {mask.shape[-1]}")
    fused = _fused_op(impl, inputs.dtype) if mask is not None else None
    if fused is not None:   # CPU inference: sampling and GEMM in one op, computed in float32
        return _call_fused(fused, inputs, [offsets, mask], kernel, bias, strides, padding,
                           dilation, dg)
    # the compiled op samples in float32 even for bfloat16 inputs: its columns go to a float32
    # GEMM as they are (casting them to bfloat16 took ~5x the bfloat16 GEMM) and only the
    # Cout-channel output is cast back
    cols = deformable_im2col(inputs, offsets, mask, (kh, kw), strides, padding, dilation, dg, impl,
                             cast_back=False)
    shape = tf.shape(cols)
    out = tf.matmul(tf.reshape(cols, [-1, K * cin]),
                    tf.reshape(tf.cast(kernel, cols.dtype), [K * cin, cout]))
    out = tf.reshape(out, [shape[0], shape[1], shape[2], cout])
    if bias is not None:
        out = tf.nn.bias_add(out, tf.cast(tf.convert_to_tensor(bias, dtype=inputs.dtype), out.dtype))
    return tf.cast(out, inputs.dtype)


def deform_conv2d_from_logits(inputs, offset_mask, kernel, bias=None, *, strides=1, padding=0,
                              dilation=1, deformable_groups=1, impl="auto"):
    """:func:`deform_conv2d` with its offsets and mask taken from one tensor, the output of a
    layer's offset/mask convolution: ``offset_mask`` [B, Ho, Wo, 3*dg*kh*kw], the offsets its
    first 2*dg*kh*kw channels, the mask the sigmoid of the rest. Inside the CPU-inference scope
    the fused op reads both in place (``ZsmTf>DeformableConv2DPacked``: no slicing copies, the
    sigmoid taken per block in float32); elsewhere slices, ``tf.sigmoid`` and
    :func:`deform_conv2d`."""
    kernel = tf.convert_to_tensor(kernel)
    inputs = tf.convert_to_tensor(inputs)
    kh, kw, _, cout = kernel.shape
    dg = int(deformable_groups)
    n_off = 2 * dg * kh * kw
    packed = _fused_op(impl, inputs.dtype, packed=True)
    if packed is not None and offset_mask.shape[-1] == 3 * dg * kh * kw:
        return _call_fused(packed, inputs, [offset_mask], kernel, bias, strides, padding,
                           dilation, dg)
    return deform_conv2d(inputs, offset_mask[..., :n_off], tf.sigmoid(offset_mask[..., n_off:]),
                         kernel, bias, strides=strides, padding=padding, dilation=dilation,
                         deformable_groups=dg, impl=impl)
