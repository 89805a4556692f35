"""The Winograd 3x3 convolution (custom_ops/winograd_conv.h) at inference: the same outputs as
TensorFlow's convolution to float rounding, used by the upscaler by default in float32 on the
CPU, never in training, bfloat16 or exports."""
import numpy as np
import pytest
import tensorflow as tf

from zsm_tf import ZoomingSlowMo
from zsm_tf import precision as prec
from zsm_tf.inference import SpaceTimeUpscaler
from zsm_tf.layers.common import build_conv, conv2d
from zsm_tf.ops import winograd

pytestmark = pytest.mark.skipif(not winograd.available(), reason="the compiled op does not build here")


def reference(x, kernel, bias, slope):
    y = tf.nn.conv2d(x, kernel, 1, "SAME") + bias
    return y if slope == 1.0 else tf.maximum(y, slope * y)


@pytest.mark.parametrize("tile", winograd.TILES)
@pytest.mark.parametrize("shape", [(2, 37, 53, 32, 20), (1, 8, 8, 8, 3), (3, 1, 5, 16, 40),
                                   (1, 30, 12, 64, 108),
                                   # narrow outputs (<= 8: the 12 x 8 kernel), over several
                                   # chunks of tiles with a partial last one: conv_last's 64 -> 3
                                   (2, 13, 107, 64, 3), (1, 9, 30, 16, 8), (1, 5, 50, 8, 9)])
@pytest.mark.parametrize("slope", [1.0, 0.1, 0.0])
def test_op_matches_the_direct_convolution(tile, shape, slope):
    n, h, w, c, k = shape
    rng = np.random.default_rng(sum(shape) + tile)
    x = tf.constant(rng.normal(size=(n, h, w, c)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, c, k)) / np.sqrt(9 * c), tf.float32)
    bias = tf.constant(rng.normal(size=k), tf.float32)
    want = reference(x, kernel, bias, slope).numpy()
    got = winograd.winograd_conv3x3(x, kernel, bias, tile, slope).numpy()
    assert got.shape == want.shape
    # tile 2: float32 rounding; tile 4's and 6's transforms lose a few more bits
    tol = {2: 2e-6, 4: 2e-5, 6: 4e-5}[tile] * np.abs(want).max()
    assert np.abs(got - want).max() <= tol
    assert np.abs(want).max() > 0.5   # not all zeros


@pytest.mark.parametrize("tile", winograd.TILES)
@pytest.mark.parametrize("shape,r", [((2, 13, 27, 32, 128), 2), ((1, 6, 9, 16, 32), 2),
                                     ((1, 7, 5, 8, 72), 3)])
def test_op_writes_the_pixel_shuffled_output_in_pytorchs_order(tile, shape, r):
    """shuffle r: the same as PixelShuffle(r) (PyTorch's order) of the activated convolution,
    made by the op as it stores its outputs."""
    from zsm_tf.layers.pixel_shuffle import PixelShuffle

    n, h, w, c, k = shape
    rng = np.random.default_rng(sum(shape) + tile + r)
    x = tf.constant(rng.normal(size=(n, h, w, c)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, c, k)) / np.sqrt(9 * c), tf.float32)
    bias = tf.constant(rng.normal(size=k), tf.float32)
    want = PixelShuffle(r)(reference(x, kernel, bias, 0.1)).numpy()
    got = winograd.winograd_conv3x3(x, kernel, bias, tile, 0.1, shuffle=r).numpy()
    assert got.shape == want.shape == (n, r * h, r * w, k // (r * r))
    assert np.abs(got - want).max() <= {2: 2e-6, 4: 2e-5, 6: 4e-5}[tile] * np.abs(want).max()
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of"):
        winograd.winograd_conv3x3(x, kernel[..., :k - 8], bias[:k - 8], tile, shuffle=r)


def test_op_rejects_bad_shapes_with_a_clear_error():
    x = tf.zeros([1, 8, 8, 12])   # channels not a multiple of 8
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of 8"):
        winograd.winograd_conv3x3(x, tf.zeros([3, 3, 12, 8]), tf.zeros([8]), 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="kernel must be"):
        winograd.winograd_conv3x3(tf.zeros([1, 8, 8, 8]), tf.zeros([3, 3, 16, 8]), tf.zeros([8]), 4)


def graph_ops(fn, *args):
    return {op.type for op in tf.function(fn).get_concrete_function(*args).graph.get_operations()}


def test_conv_layer_uses_the_op_only_inside_a_scope_and_where_it_qualifies():
    conv = conv2d(16)
    build_conv(conv, 8)
    x = tf.random.normal([1, 10, 12, 8])

    def scoped(v, tile=2):
        with winograd.scope(tile):
            return conv(v, negative_slope=0.1)
    assert winograd.OP_NAME in graph_ops(scoped, x)
    assert winograd.OP_NAME not in graph_ops(lambda v: conv(v, negative_slope=0.1), x)
    np.testing.assert_allclose(tf.function(scoped)(x).numpy(),
                               tf.nn.leaky_relu(conv(x), 0.1).numpy(), atol=2e-6)
    odd = conv2d(16)
    build_conv(odd, 3)   # 3 input channels: the stock convolution
    with winograd.scope(4):
        assert not winograd.eligible(odd, tf.zeros([1, 8, 8, 3]))
        assert winograd.active_tile() == 4
    assert winograd.active_tile() == 0
    with pytest.raises(ValueError, match="tile"):
        with winograd.scope(3):
            pass


def tiny():
    tf.keras.utils.set_random_seed(11)
    model = ZoomingSlowMo(nf=8, groups=1, front_rbs=1, back_rbs=2, residual="motion",
                          deform_impl="gather")
    last = model.reconstructor.conv_last   # zero with a residual: make the network visible
    last.kernel.assign(tf.random.normal(last.kernel.shape, stddev=0.05))
    return model


def test_resolve_winograd(monkeypatch):
    monkeypatch.delenv(prec.WINOGRAD_ENV, raising=False)
    assert prec.resolve_winograd("auto", "float32") == 6
    assert prec.resolve_winograd("auto", "bfloat16") == 0
    assert prec.resolve_winograd(2, "float32") == 2
    assert prec.resolve_winograd(0, "float32") == 0
    assert prec.resolve_winograd(False, "float32") == 0
    with pytest.raises(ValueError, match="winograd"):
        prec.resolve_winograd(3, "float32")
    assert prec.resolve_winograd(4, "float32") == 4
    monkeypatch.setenv(prec.WINOGRAD_ENV, "2")
    assert prec.resolve_winograd("auto", "float32") == 2
    monkeypatch.setenv(prec.WINOGRAD_ENV, "4")
    assert prec.resolve_winograd("auto", "float32") == 4
    monkeypatch.setenv(prec.WINOGRAD_ENV, "0")
    assert prec.resolve_winograd("auto", "float32") == 0
    assert prec.resolve_jit("auto", "float32", 0) is True   # XLA where Winograd is off
    assert prec.resolve_jit("auto", "float32", 6) is False
    monkeypatch.setenv(prec.WINOGRAD_ENV, "5")
    with pytest.raises(ValueError, match=prec.WINOGRAD_ENV):
        prec.resolve_winograd("auto", "float32")


def test_upscaler_uses_it_by_default_with_the_same_frames(monkeypatch):
    monkeypatch.delenv(prec.WINOGRAD_ENV, raising=False)
    model = tiny()
    rng = np.random.default_rng(0)
    clip = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(4)]
    default = SpaceTimeUpscaler(model, window=3, precision="float32")
    off = SpaceTimeUpscaler(model, window=3, precision="float32", winograd=0, jit=False)
    assert default.winograd == 6 and default.jit is False and off.winograd == 0
    x = rng.random((1, 3, 16, 24, 3), dtype=np.float32)
    exact = off.predict(x, 0)
    assert np.abs(default.predict(x, 0) - exact).max() < 2e-5
    assert np.abs(SpaceTimeUpscaler(model, window=3, winograd=2).predict(x, 0) - exact).max() < 2e-6
    a = list(default.stream(iter(clip)))
    b = list(off.stream(iter(clip)))
    assert len(a) == len(b) == 7
    assert max(np.abs(p.astype(int) - q.astype(int)).max() for p, q in zip(a, b)) <= 1
    assert SpaceTimeUpscaler(model, window=3, precision="bfloat16").winograd == 0


def test_training_and_plain_calls_keep_the_stock_convolution():
    model = tiny()
    x = tf.random.stateless_uniform([1, 2, 16, 16, 3], seed=[3, 4])
    ops = graph_ops(lambda v: model(v, training=False), x)
    assert winograd.OP_NAME not in ops and "Conv2D" in ops
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(x, training=True))
    assert all(g is not None for g in tape.gradient(loss, model.trainable_variables))


def test_a_changed_kernel_is_seen_by_the_same_graph():
    """The op reuses its kernel transform only while the kernel's values are unchanged."""
    conv = conv2d(16)
    build_conv(conv, 8)
    x = tf.random.normal([1, 9, 11, 8])

    @tf.function
    def scoped(v):
        with winograd.scope(4):
            return conv(v)
    first = scoped(x).numpy()
    np.testing.assert_allclose(first, conv(x).numpy(), atol=2e-5)
    conv.kernel.assign(conv.kernel * -2.0)
    np.testing.assert_allclose(scoped(x).numpy(), conv(x).numpy(), atol=4e-5)
    assert np.abs(scoped(x).numpy() - first).max() > 0.1


@pytest.mark.parametrize("tile", winograd.TILES)
def test_op_convolves_a_channel_concatenation_without_making_it(tile):
    from zsm_tf.layers.common import conv_concat

    rng = np.random.default_rng(tile)
    parts = [tf.constant(rng.normal(size=(2, 13, 17, c)), tf.float32) for c in (8, 24, 16)]
    kernel = tf.constant(rng.normal(size=(3, 3, 48, 20)) / 20, tf.float32)
    bias = tf.constant(rng.normal(size=20), tf.float32)
    want = reference(tf.concat(parts, -1), kernel, bias, 0.1).numpy()
    got = winograd.winograd_conv3x3(parts, kernel, bias, tile, 0.1).numpy()
    assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()
    conv = conv2d(20)
    build_conv(conv, 48)

    def scoped(a, b, c):
        with winograd.scope(tile):
            return conv_concat(conv, [a, b, c], 0.1)
    assert winograd.OP_NAME in graph_ops(scoped, *parts)
    np.testing.assert_allclose(tf.function(scoped)(*parts).numpy(),
                               tf.nn.leaky_relu(conv(tf.concat(parts, -1)), 0.1).numpy(), atol=2e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="share"):
        winograd.winograd_conv3x3([parts[0], parts[1][:, 1:]], kernel[:, :, :32], bias, tile)
