"""The tf.gather deformable convolution against the authors' golden vectors and a naive numpy
reference written independently (loops over pixels, taps and groups)."""
import numpy as np
import pytest
import tensorflow as tf

from zsm_tf.ops import deform_conv2d


def nhwc(a):
    return np.transpose(a, (0, 2, 3, 1))


@pytest.mark.parametrize("case", ["modulated", "strided"])
def test_matches_golden_forward_and_all_gradients(shared_dir, case):
    d = np.load(shared_dir / "golden" / f"deform_conv_{case}.npz")
    x = tf.Variable(nhwc(d["x"]).astype(np.float32))
    off = tf.Variable(nhwc(d["offset"]).astype(np.float32))
    mask = tf.Variable(nhwc(d["mask"]).astype(np.float32)) if "mask" in d else None
    k = tf.Variable(np.transpose(d["weight"], (2, 3, 1, 0)).astype(np.float32))
    b = tf.Variable(d["bias"].astype(np.float32))
    with tf.GradientTape() as tape:
        y = deform_conv2d(x, off, mask, k, b, strides=int(d["stride"]), padding=int(d["padding"]),
                          dilation=int(d["dilation"]),
                          deformable_groups=int(d["deformable_groups"]), impl="gather")
        loss = tf.reduce_sum(y * nhwc(d["grad_output"]).astype(np.float32))
    variables = [x, off, k, b] + ([mask] if mask is not None else [])
    grads = tape.gradient(loss, variables)
    np.testing.assert_allclose(y.numpy(), nhwc(d["output"]), atol=1e-4, rtol=0)
    expected = [nhwc(d["grad_x"]), nhwc(d["grad_offset"]),
                np.transpose(d["grad_weight"], (2, 3, 1, 0)), d["grad_bias"]]
    if mask is not None:
        expected.append(nhwc(d["grad_mask"]))
    for name, g, e in zip(["x", "offset", "weight", "bias", "mask"], grads, expected):
        assert np.abs(g.numpy() - e).max() <= 1e-4, name
    # the sampling must really move: some taps are outside the image in these files
    assert np.abs(d["offset"]).max() > 2


def naive_deform_conv(x, off, mask, kernel, bias, stride, pad, dil, dg):
    """Direct loops, float64: x [B,H,W,C], off [B,Ho,Wo,2*dg*K], kernel [kh,kw,C,Co]."""
    B, H, W, C = x.shape
    kh, kw, _, Co = kernel.shape
    Ho = (H + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    Wo = (W + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    cg = C // dg

    def pixel(b, yy, xx, c0):
        if yy < 0 or yy >= H or xx < 0 or xx >= W:
            return np.zeros(cg)
        return x[b, yy, xx, c0:c0 + cg]

    out = np.zeros((B, Ho, Wo, Co))
    for b in range(B):
        for i in range(Ho):
            for j in range(Wo):
                col = np.zeros((kh, kw, C))
                for g in range(dg):
                    for ki in range(kh):
                        for kj in range(kw):
                            k = ki * kw + kj
                            py = i * stride - pad + ki * dil + off[b, i, j, 2 * (g * kh * kw + k)]
                            px = j * stride - pad + kj * dil + off[b, i, j, 2 * (g * kh * kw + k) + 1]
                            if py <= -1 or py >= H or px <= -1 or px >= W:
                                continue
                            y0, x0 = int(np.floor(py)), int(np.floor(px))
                            ly, lx = py - y0, px - x0
                            v = ((1 - ly) * (1 - lx) * pixel(b, y0, x0, g * cg)
                                 + (1 - ly) * lx * pixel(b, y0, x0 + 1, g * cg)
                                 + ly * (1 - lx) * pixel(b, y0 + 1, x0, g * cg)
                                 + ly * lx * pixel(b, y0 + 1, x0 + 1, g * cg))
                            m = 1.0 if mask is None else mask[b, i, j, g * kh * kw + k]
                            col[ki, kj, g * cg:(g + 1) * cg] = m * v
                out[b, i, j] = np.einsum("abc,abco->o", col, kernel)
    return out + (0 if bias is None else bias)


@pytest.mark.parametrize("B,H,W,C,Co,k,stride,pad,dil,dg,use_mask,spread", [
    (2, 7, 9, 4, 3, 3, 1, 1, 1, 2, True, 1.5),
    (1, 10, 6, 6, 5, 3, 2, 1, 1, 3, False, 3.0),
    (1, 9, 11, 4, 2, 3, 1, 2, 2, 1, True, 2.0),
    (3, 5, 8, 8, 4, 1, 1, 0, 1, 4, True, 0.8),
    (1, 6, 7, 2, 2, 3, 2, 0, 1, 1, True, 12.0),  # far outside the image
])
def test_matches_naive_reference(B, H, W, C, Co, k, stride, pad, dil, dg, use_mask, spread):
    rng = np.random.default_rng(B * 100 + H)
    x = rng.normal(size=(B, H, W, C))
    Ho = (H + 2 * pad - dil * (k - 1) - 1) // stride + 1
    Wo = (W + 2 * pad - dil * (k - 1) - 1) // stride + 1
    off = rng.normal(scale=spread, size=(B, Ho, Wo, 2 * dg * k * k))
    mask = rng.uniform(size=(B, Ho, Wo, dg * k * k)) if use_mask else None
    kernel = rng.normal(size=(k, k, C, Co))
    bias = rng.normal(size=(Co,))
    expected = naive_deform_conv(x, off, mask, kernel, bias, stride, pad, dil, dg)
    got = deform_conv2d(x, off, mask, kernel, bias, strides=stride, padding=pad, dilation=dil,
                        deformable_groups=dg, impl="gather")
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-9)


def test_unknown_spatial_size_and_xla():
    fn = tf.function(lambda x, o, m, k: deform_conv2d(x, o, m, k, padding=1, deformable_groups=2,
                                                      impl="gather"),
                     input_signature=[tf.TensorSpec([None, None, None, 4]),
                                      tf.TensorSpec([None, None, None, 36]),
                                      tf.TensorSpec([None, None, None, 18]),
                                      tf.TensorSpec([3, 3, 4, 5])],
                     jit_compile=True)
    rng = np.random.default_rng(0)
    args = [rng.normal(size=s).astype(np.float32) for s in
            [(1, 6, 5, 4), (1, 6, 5, 36), (1, 6, 5, 18), (3, 3, 4, 5)]]
    got = fn(*args)
    ref = deform_conv2d(*args, padding=1, deformable_groups=2, impl="gather")
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5)


def test_bad_arguments_are_named():
    x = np.zeros((1, 4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="offsets need"):
        deform_conv2d(x, np.zeros((1, 4, 4, 10), np.float32), None,
                      np.zeros((3, 3, 4, 2), np.float32), padding=1)
    with pytest.raises(ValueError, match="impl must be"):
        deform_conv2d(x, np.zeros((1, 4, 4, 18), np.float32), None,
                      np.zeros((3, 3, 4, 2), np.float32), padding=1, impl="cuda")
    with pytest.raises(ValueError, match="divisible"):
        deform_conv2d(x, np.zeros((1, 4, 4, 54), np.float32), None,
                      np.zeros((3, 3, 4, 2), np.float32), padding=1, deformable_groups=3)


def test_bfloat16_deformable_conv_rounds_only_its_output():
    """bfloat16 inputs: the compiled op samples in float32 and its float32 columns go to a float32
    GEMM (they were cast to bfloat16 first: a whole extra pass, and a second rounding), so the
    bfloat16 output is the exact result rounded once: within half a bfloat16 step."""
    from zsm_tf.ops import custom_op

    if not custom_op.custom_op_available():
        pytest.skip("the compiled op is not available")
    rng = np.random.default_rng(0)
    bf = lambda a: tf.constant(a, tf.bfloat16)  # noqa: E731
    x, off = bf(rng.uniform(0, 1, (2, 12, 16, 16))), bf(rng.normal(0, 2, (2, 12, 16, 2 * 2 * 9)))
    mask, k = bf(rng.uniform(0, 1, (2, 12, 16, 2 * 9))), bf(rng.normal(0, 0.2, (3, 3, 16, 8)))
    b = bf(rng.normal(0, 0.1, 8))
    y = deform_conv2d(x, off, mask, k, b, padding=1, deformable_groups=2, impl="custom_op")
    assert y.dtype == tf.bfloat16
    f64 = lambda t: tf.cast(t, tf.float64)  # noqa: E731
    ref = deform_conv2d(f64(x), f64(off), f64(mask), f64(k), f64(b), padding=1, deformable_groups=2,
                        impl="gather").numpy()
    half_step = 2.0 ** (np.floor(np.log2(np.abs(ref) + 1e-30)) - 8)
    err = np.abs(f64(y).numpy() - ref)
    assert np.all(err <= 1.01 * half_step + 1e-5), float((err / half_step).max())
