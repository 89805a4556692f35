"""The fused deformable convolution (custom_ops/deform_conv_op.cc: sampling and GEMM per block of
pixels, CPU inference): the same outputs as the im2col + GEMM path, used only inside the
upscaler's CPU-inference scope (zsm_tf.ops.winograd.scope), in float32 and bfloat16."""
import numpy as np
import pytest
import tensorflow as tf

from zsm_tf.ops import custom_op, winograd
from zsm_tf.ops.deform_conv import deform_conv2d

pytestmark = pytest.mark.skipif(not custom_op.custom_op_available(),
                                reason="the compiled op does not build here")
OP = "ZsmTf>DeformableConv2D"


def case(b, h, w, c, cout, dg, k=3, stride=1, pad=1, dil=1, seed=0, spread=3.0):
    rng = np.random.default_rng(seed)
    ho = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
    x = tf.constant(rng.normal(size=(b, h, w, c)), tf.float32)
    off = tf.constant(rng.normal(size=(b, ho, wo, 2 * dg * k * k)) * spread, tf.float32)
    mask = tf.constant(rng.uniform(size=(b, ho, wo, dg * k * k)), tf.float32)
    kernel = tf.constant(rng.normal(size=(k, k, c, cout)) / np.sqrt(k * k * c), tf.float32)
    bias = tf.constant(rng.normal(size=cout), tf.float32)
    args = dict(strides=stride, padding=pad, dilation=dil, deformable_groups=dg)
    return (x, off, mask, kernel, bias), args


def run(inputs, args, scoped, impl="custom_op"):
    def fn():
        if not scoped:
            return deform_conv2d(*inputs, impl=impl, **args)
        with winograd.scope(4):
            return deform_conv2d(*inputs, impl=impl, **args)
    f = tf.function(fn)
    ops = {op.type for op in f.get_concrete_function().graph.get_operations()}
    return f().numpy(), ops


@pytest.mark.parametrize("shape", [
    dict(b=2, h=23, w=37, c=32, cout=32, dg=8),        # the network's: Cg 4, Cout a multiple of 16
    dict(b=1, h=9, w=13, c=16, cout=20, dg=4),         # Cout padded to the micro-kernel's width
    dict(b=3, h=7, w=5, c=12, cout=7, dg=2),           # Cg 6: the runtime group width
    dict(b=1, h=17, w=15, c=8, cout=16, dg=1, stride=2, pad=1),
    dict(b=1, h=14, w=11, c=8, cout=16, dg=2, dil=2, pad=2),
    dict(b=1, h=6, w=6, c=8, cout=16, dg=1, pad=0, spread=9.0),  # most samples outside the image
])
def test_fused_op_matches_im2col_and_gemm(shape):
    inputs, args = case(**shape)
    want, ops_unfused = run(inputs, args, scoped=False)
    got, ops_fused = run(inputs, args, scoped=True)
    assert OP in ops_fused and "ZsmTf>DeformableIm2col" not in ops_fused
    assert OP not in ops_unfused and "ZsmTf>DeformableIm2col" in ops_unfused
    assert got.shape == want.shape
    assert np.abs(want).max() > 0.5
    assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max() * 10
    gather, _ = run(inputs, args, scoped=False, impl="gather")
    assert np.abs(got - gather).max() <= 2e-5 * np.abs(want).max()


def test_fused_op_activation_and_empty_batch():
    lib = custom_op.load()
    (x, off, mask, kernel, bias), _ = case(1, 10, 12, 16, 16, 2)
    attrs = dict(kernel_size=[3, 3], padding=[1, 1], deformable_groups=2)
    plain = lib.zsm_tf_deformable_conv2d(x, off, mask, kernel, bias, **attrs).numpy()
    leaky = lib.zsm_tf_deformable_conv2d(x, off, mask, kernel, bias, negative_slope=0.1,
                                         **attrs).numpy()
    assert (plain < 0).any()
    np.testing.assert_allclose(leaky, np.maximum(plain, 0.1 * plain), rtol=1e-6, atol=1e-6)
    empty = lib.zsm_tf_deformable_conv2d(x[:0], off[:0], mask[:0], kernel, bias, **attrs)
    assert empty.shape == (0, 10, 12, 16)


def test_fused_op_rejects_bad_shapes_with_a_clear_error():
    lib = custom_op.load()
    (x, off, mask, kernel, bias), _ = case(1, 8, 8, 16, 16, 2)
    attrs = dict(kernel_size=[3, 3], padding=[1, 1], deformable_groups=2)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="kernel|Dimension"):
        lib.zsm_tf_deformable_conv2d(x, off, mask, kernel[:, :, :8], bias, **attrs)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="mask|Dimension"):
        lib.zsm_tf_deformable_conv2d(x, off, mask[..., :9], kernel, bias, **attrs)
    wide = tf.zeros([1, 1, 1 << 15, 4])   # the sampler's int32 indices: sides below 2^15
    with pytest.raises(tf.errors.InvalidArgumentError, match="pixels a side"):
        lib.zsm_tf_deformable_conv2d(wide, tf.zeros([1, 1, 1 << 15, 18]), tf.zeros([1, 1, 1 << 15, 9]),
                                     tf.zeros([3, 3, 4, 16]), tf.zeros([16]), kernel_size=[3, 3],
                                     padding=[1, 1])


def test_fused_op_samples_nan_and_far_offsets_as_the_im2col_op():
    """Offsets NaN or far outside give zero columns, corners outside read zeros (an inf in the
    image stays out of samples that do not touch it), a NaN mask only spoils its own sample:
    the fused sampler (tap-major, branch-free plans) agrees with the im2col op everywhere."""
    (x, off, mask, kernel, bias), args = case(2, 12, 14, 16, 16, 2, seed=3)
    off, mask, x = off.numpy(), mask.numpy(), x.numpy()
    off[0, 2, 3, 4] = np.nan
    off[0, 5, 5, 7] = np.inf
    off[1, 1:4, 2:6, ::3] = -40.0
    off[1, 6, 6, 0:2] = [11.999, -0.9999]      # the last row, a corner on each side
    mask[0, 7, 7, 3] = np.nan
    x[1, 0, 0, :] = np.inf                     # read only by samples that touch pixel (0, 0)
    inputs = tuple(tf.constant(v) for v in (x, off, mask)) + (kernel, bias)
    want, _ = run(inputs, args, scoped=False)
    got, ops = run(inputs, args, scoped=True)
    assert OP in ops
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    assert fin.mean() > 0.8 and (~fin).any()
    assert np.abs(got[fin] - want[fin]).max() <= 2e-5 * np.abs(want[fin]).max()


def test_training_keeps_the_differentiable_path_and_the_scope_decides():
    """Outside the scope (training, export) or with ``fused_deform=False`` the op is never used;
    gradients flow through the im2col op."""
    (x, off, mask, kernel, bias), args = case(1, 8, 10, 16, 16, 2)
    with tf.GradientTape() as tape:
        tape.watch([x, off, kernel])
        y = deform_conv2d(x, off, mask, kernel, bias, impl="custom_op", **args)
        loss = tf.reduce_sum(y * y)
    grads = tape.gradient(loss, [x, off, kernel])
    assert all(g is not None and np.abs(g.numpy()).max() > 0 for g in grads)

    def traced(tile, fused):
        def fn():
            with winograd.scope(tile, fused_deform=fused):
                return deform_conv2d(x, off, mask, kernel, bias, impl="custom_op", **args)
        return {op.type for op in tf.function(fn).get_concrete_function().graph.get_operations()}
    assert OP not in traced(4, False) and OP in traced(0, True) and OP not in traced(0, None)


def test_bfloat16_inputs_compute_in_float32_like_the_im2col_path():
    (x, off, mask, kernel, bias), args = case(2, 12, 14, 32, 32, 8)
    bf = [tf.cast(t, tf.bfloat16) for t in (x, off, mask, kernel, bias)]
    want, ops_unfused = run(bf, args, scoped=False)
    got, ops_fused = run(bf, args, scoped=True)
    assert OP in ops_fused and OP not in ops_unfused
    assert got.dtype == want.dtype and got.shape == want.shape
    # both sample and multiply in float32 and round the output once to bfloat16
    diff = np.abs(got.astype(np.float32) - want.astype(np.float32))
    assert diff.max() <= 2 ** -7 * np.abs(want.astype(np.float32)).max()
    assert np.mean(diff == 0) > 0.9


def test_upscaler_uses_it_on_the_cpu_with_the_same_frames(monkeypatch):
    from zsm_tf import ZoomingSlowMo
    from zsm_tf import precision as prec
    from zsm_tf.inference import SpaceTimeUpscaler

    tf.keras.utils.set_random_seed(5)
    model = ZoomingSlowMo(nf=16, groups=2, front_rbs=1, back_rbs=1, residual="motion",
                          deform_impl="custom_op")
    last = model.reconstructor.conv_last   # zero with a residual: make the network visible
    last.kernel.assign(tf.random.normal(last.kernel.shape, stddev=0.05))
    x = np.random.default_rng(1).random((1, 3, 16, 24, 3), dtype=np.float32)
    monkeypatch.delenv(prec.FUSED_DEFORM_ENV, raising=False)
    for precision in ("float32", "bfloat16"):
        on = SpaceTimeUpscaler(model, window=3, precision=precision)
        monkeypatch.setenv(prec.FUSED_DEFORM_ENV, "0")
        off = SpaceTimeUpscaler(model, window=3, precision=precision)
        monkeypatch.delenv(prec.FUSED_DEFORM_ENV)
        assert on.fused_deform and not off.fused_deform
        a, b = on.predict(x, 0), off.predict(x, 0)
        assert np.abs(a - b).max() < (2e-5 if precision == "float32" else 2e-2)
        assert np.abs(b).max() > 0.1


@pytest.mark.parametrize("shape", [dict(b=2, h=13, w=21, c=32, cout=32, dg=8),
                                   dict(b=1, h=9, w=7, c=12, cout=20, dg=2, stride=2)])
def test_packed_op_reads_offsets_and_mask_logits_in_place(shape):
    """deform_conv2d_from_logits (what the layer calls): inside the scope one packed op, the
    sigmoid of the mask logits taken inside, even at logits far into the tails."""
    from zsm_tf.ops.deform_conv import deform_conv2d_from_logits

    (x, off, _, kernel, bias), args = case(**shape)
    rng = np.random.default_rng(3)
    logits = rng.normal(size=off.shape[:3] + (off.shape[-1] // 2,)) * 4
    logits.flat[:6] = [-100.0, 100.0, -30.0, 30.0, 0.0, -87.5]
    packed = tf.concat([off, tf.constant(logits, tf.float32)], -1)

    def fn(scoped):
        def f():
            if not scoped:
                return deform_conv2d_from_logits(x, packed, kernel, bias, impl="custom_op", **args)
            with winograd.scope(4):
                return deform_conv2d_from_logits(x, packed, kernel, bias, impl="custom_op", **args)
        f = tf.function(f)
        return f().numpy(), {op.type for op in f.get_concrete_function().graph.get_operations()}
    want, ops_plain = fn(False)
    got, ops_packed = fn(True)
    assert "ZsmTf>DeformableConv2DPacked" in ops_packed
    assert not {"Sigmoid", "StridedSlice", OP, "ZsmTf>DeformableIm2col"} & ops_packed
    assert "Sigmoid" in ops_plain and "ZsmTf>DeformableIm2col" in ops_plain
    assert np.abs(want).max() > 0.5
    assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()


@pytest.mark.parametrize("packed", [False, True])
def test_bfloat16_tensors_go_in_without_float32_copies_and_give_the_same_bits(packed):
    """A bfloat16 model's tensors reach the op as they are (no Cast in the graph in front of it
    or behind it): the op widens them in place and rounds its output to nearest even, bit for
    bit what casting its float32 form's inputs and output gives, NaN and infinities included."""
    from zsm_tf.ops.deform_conv import deform_conv2d_from_logits

    (x, off, mask, kernel, bias), args = case(2, 11, 19, 32, 24, 8, seed=4)
    rng = np.random.default_rng(6)
    logits = tf.constant(rng.normal(size=mask.shape) * 3, tf.float32)
    x = tf.tensor_scatter_nd_update(x, [[0, 2, 3, 0], [1, 4, 5, 1], [0, 7, 7, 2]],
                                    [np.nan, np.inf, -np.inf])
    bf = {"x": tf.cast(x, tf.bfloat16), "off": tf.cast(off, tf.bfloat16),
          "mask": tf.cast(mask, tf.bfloat16), "om": tf.cast(tf.concat([off, logits], -1), tf.bfloat16)}

    def fn():
        with winograd.scope(0, fused_deform=True):
            if packed:
                return deform_conv2d_from_logits(bf["x"], bf["om"], kernel, bias,
                                                 impl="custom_op", **args)
            return deform_conv2d(bf["x"], bf["off"], bf["mask"], kernel, bias, impl="custom_op",
                                 **args)
    f = tf.function(fn)
    graph = f.get_concrete_function().graph
    name = OP + ("Packed" if packed else "")
    (node,) = [op for op in graph.get_operations() if op.type == name]
    assert node.get_attr("T") == tf.bfloat16
    assert all(t.op.type != "Cast" for t in node.inputs[:2])
    got = f()
    assert got.dtype == tf.bfloat16

    lib = custom_op.load()
    op = lib.zsm_tf_deformable_conv2d_packed if packed else lib.zsm_tf_deformable_conv2d
    sampling = [bf["om"]] if packed else [bf["off"], bf["mask"]]
    want = tf.cast(op(*[tf.cast(t, tf.float32) for t in (bf["x"], *sampling)], kernel, bias,
                      kernel_size=[3, 3], strides=[1, 1], padding=[1, 1], dilation=[1, 1],
                      deformable_groups=8), tf.bfloat16)
    g, w = got.numpy().astype(np.float32), want.numpy().astype(np.float32)
    assert np.isnan(w).any() and np.isfinite(w).mean() > 0.5   # the NaN input spreads, not all
    np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
    assert np.array_equal(got.numpy().view(np.uint16)[~np.isnan(w)],
                          want.numpy().view(np.uint16)[~np.isnan(w)])
