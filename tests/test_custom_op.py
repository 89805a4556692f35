"""The compiled deformable op (custom_ops/) against the golden vectors and the gather path."""
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from zsm_tf.ops import custom_op
from zsm_tf.ops.deform_conv import deform_conv2d, deformable_im2col_gather, resolve_impl

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"


@pytest.fixture(scope="module", autouse=True)
def op():
    if not custom_op.custom_op_available():
        pytest.skip(f"custom op unavailable: {custom_op.unavailable_reason()}")
    return custom_op.load()


def nhwc(a):
    return np.transpose(a, (0, 2, 3, 1))


@pytest.mark.parametrize("name", ["deform_conv_modulated", "deform_conv_strided"])
def test_golden_forward_and_gradients(name):
    path = GOLDEN / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    g = np.load(path)
    x, off = tf.constant(nhwc(g["x"])), tf.constant(nhwc(g["offset"]))
    mask = tf.constant(nhwc(g["mask"])) if "mask" in g else None
    kernel = tf.constant(np.transpose(g["weight"], (2, 3, 1, 0)))
    bias = tf.constant(g["bias"])
    watched = [x, off, kernel, bias] + ([mask] if mask is not None else [])
    with tf.GradientTape() as tape:
        tape.watch(watched)
        out = deform_conv2d(x, off, mask, kernel, bias, strides=int(g["stride"]),
                            padding=int(g["padding"]), dilation=int(g["dilation"]),
                            deformable_groups=int(g["deformable_groups"]), impl="custom_op")
        loss = tf.reduce_sum(out * nhwc(g["grad_output"]))
    grads = tape.gradient(loss, watched)
    np.testing.assert_allclose(out, nhwc(g["output"]), atol=1e-4)
    expected = [nhwc(g["grad_x"]), nhwc(g["grad_offset"]),
                np.transpose(g["grad_weight"], (2, 3, 1, 0)), g["grad_bias"]]
    if mask is not None:
        expected.append(nhwc(g["grad_mask"]))
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, atol=1e-4)


# (B, H, W, C, dg, kernel, strides, padding, dilation, offset scale, modulated)
CASES = [
    (2, 7, 9, 8, 2, (3, 3), 1, 1, 1, 2.0, True),
    (1, 11, 10, 12, 3, (3, 3), 2, 1, 2, 1.5, False),
    (3, 5, 6, 4, 1, (1, 1), 1, 0, 1, 1.0, True),
    (2, 9, 8, 6, 2, (3, 2), (2, 1), (0, 2), (1, 2), 3.0, True),
    (1, 6, 7, 8, 4, (3, 3), 1, 1, 1, 20.0, True),  # mostly far outside the image
    (1, 1, 1, 2, 1, (3, 3), 1, 1, 1, 0.7, True),
    (1, 40, 36, 8, 2, (3, 3), 1, 1, 1, 2.0, True),  # batch < threads: several slabs per image
    # group widths C/dg with their own compiled kernels: 8, 16, 32 (4 above; others generic)
    (2, 6, 5, 16, 2, (3, 3), 1, 1, 1, 2.0, True),
    (1, 5, 4, 32, 2, (3, 3), 1, 1, 1, 2.0, True),
    (1, 4, 5, 32, 1, (3, 3), 2, 1, 1, 2.0, True),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else v


def _random_case(case, dtype=np.float32, seed=0):
    B, H, W, C, dg, (kh, kw), s, p, d, scale, modulated = case
    (sh, sw), (ph, pw), (dh, dw) = _pair(s), _pair(p), _pair(d)
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((B, H, W, C)).astype(dtype))
    off = tf.constant((rng.standard_normal((B, Ho, Wo, 2 * dg * kh * kw)) * scale).astype(dtype))
    mask = tf.constant(rng.random((B, Ho, Wo, dg * kh * kw)).astype(dtype)) if modulated else None
    attrs = dict(kernel_size=(kh, kw), strides=(sh, sw), padding=(ph, pw), dilation=(dh, dw),
                 deformable_groups=dg)
    return x, off, mask, attrs


def _cols_and_grads(fn, x, off, mask, attrs, upstream=None):
    watched = [x, off] + ([mask] if mask is not None else [])
    with tf.GradientTape() as tape:
        tape.watch(watched)
        cols = fn(x, off, mask, **attrs)
        if upstream is None:
            upstream = tf.random.stateless_normal(tf.shape(cols), [1, 2], dtype=cols.dtype)
        loss = tf.reduce_sum(cols * upstream)
    return cols, tape.gradient(loss, watched)


@pytest.mark.parametrize("case", CASES)
def test_matches_gather(case):
    x, off, mask, attrs = _random_case(case)
    cols, grads = _cols_and_grads(custom_op.deformable_im2col, x, off, mask, attrs)
    ref, ref_grads = _cols_and_grads(deformable_im2col_gather, x, off, mask, attrs)
    assert cols.shape == ref.shape
    np.testing.assert_allclose(cols, ref, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_numeric_gradient_float64():
    rng = np.random.default_rng(1)
    B, H, W, C, dg = 1, 4, 5, 4, 2
    x = tf.constant(rng.standard_normal((B, H, W, C)))
    # keep sample positions 0.2 away from integers, where bilinear sampling has kinks
    frac = rng.uniform(0.2, 0.8, (B, H, W, 2 * dg * 9))
    off = tf.constant(rng.integers(-2, 2, frac.shape) + frac)
    mask = tf.constant(rng.random((B, H, W, dg * 9)))

    def f(x, off, mask):
        return custom_op.deformable_im2col(x, off, mask, 3, 1, 1, 1, dg)

    theoretical, numerical = tf.test.compute_gradient(f, [x, off, mask], delta=1e-4)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, atol=1e-6)


def test_unknown_spatial_dims_in_tf_function():
    C, dg = 8, 2
    spec = [tf.TensorSpec([None, None, None, C]), tf.TensorSpec([None, None, None, 2 * dg * 9]),
            tf.TensorSpec([None, None, None, dg * 9])]

    @tf.function(input_signature=spec)
    def f(x, off, mask):
        with tf.GradientTape() as tape:
            tape.watch([x, off, mask])
            cols = custom_op.deformable_im2col(x, off, mask, 3, 1, 1, 1, dg)
            cols_ones = custom_op.deformable_im2col(x, off, None, 3, 1, 1, 1, dg)
            assert cols.shape.as_list() == [None, None, None, 9 * C]
            loss = tf.reduce_sum(cols * cols) + tf.reduce_sum(cols_ones)
        return cols, cols_ones, tape.gradient(loss, [x, off, mask])

    for case in [(2, 5, 7, C, dg, (3, 3), 1, 1, 1, 2.0, True),
                 (1, 8, 3, C, dg, (3, 3), 1, 1, 1, 2.0, True)]:
        x, off, mask, attrs = _random_case(case)
        cols, cols_ones, grads = f(x, off, mask)
        np.testing.assert_allclose(cols, deformable_im2col_gather(x, off, mask, **attrs), atol=1e-5)
        np.testing.assert_allclose(cols_ones, deformable_im2col_gather(x, off, None, **attrs),
                                   atol=1e-5)
        assert [g.shape for g in grads] == [x.shape, off.shape, mask.shape]


def test_float16_inputs_computed_in_float32():
    x, off, mask, attrs = _random_case(CASES[0])
    cols = custom_op.deformable_im2col(tf.cast(x, tf.float16), tf.cast(off, tf.float16),
                                       tf.cast(mask, tf.float16), **attrs)
    assert cols.dtype == tf.float16
    ref = deformable_im2col_gather(x, off, mask, **attrs)
    np.testing.assert_allclose(tf.cast(cols, tf.float32), ref, atol=0.05, rtol=0.01)


def test_bad_offsets_channels_raise():
    x, off, mask, attrs = _random_case(CASES[0])
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        custom_op.deformable_im2col(x, off[..., :-2], mask, **attrs)


def test_auto_resolves_to_custom_op():
    assert resolve_impl("auto") == "custom_op"


def test_disable_env_and_build_failure_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("ZSM_TF_DISABLE_CUSTOM_OP", "1")
    assert not custom_op.custom_op_available()
    assert resolve_impl("auto") == "gather"
    monkeypatch.delenv("ZSM_TF_DISABLE_CUSTOM_OP")
    # a fresh process state with no compiler: one warning, then the gather path
    monkeypatch.setattr(custom_op, "_lib", None)
    monkeypatch.setattr(custom_op, "_tried", False)
    monkeypatch.setattr(custom_op, "_error", None)
    monkeypatch.setenv("ZSM_TF_OP_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-zsm")
    with pytest.warns(RuntimeWarning, match="falling back"):
        assert not custom_op.custom_op_available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        assert not custom_op.custom_op_available()
    assert resolve_impl("auto") == "gather"
    assert "no-such-compiler-zsm" in custom_op.unavailable_reason()
