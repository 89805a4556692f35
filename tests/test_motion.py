"""The classical motion prior (zsm_tf.ops.flow) and ZoomingSlowMo(residual="motion")."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from zsm_tf.baseline import bicubic_blend, upscale_frames
from zsm_tf.model import ZoomingSlowMo
from zsm_tf.ops import flow

TINY = dict(nf=8, groups=2, front_rbs=1, back_rbs=1, deform_impl="gather")


def _texture(h, w, seed=0, freq=0.9):
    """A smooth random RGB texture [h, w, 3] in [0, 1] (sum of low-frequency sinusoids)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for _ in range(12):
        fy, fx = rng.uniform(-freq, freq, 2)
        img += rng.uniform(0.2, 1.0, 3) * np.cos(fy * y + fx * x + rng.uniform(0, 6.3))[..., None]
    img -= img.min()
    return (img / img.max()).astype(np.float32)


def _translated(img, dx, dy, size):
    """``img`` seen through a window of ``size`` moved by (-dx, -dy): content moves by (dx, dy)."""
    out = flow.bilinear_sample(tf.constant(img[None]), tf.fill([1, *img.shape[:2]], -dx),
                               tf.fill([1, *img.shape[:2]], -dy))[0].numpy()
    m = (img.shape[0] - size) // 2
    return out[m:m + size, m:m + size]


def test_bilinear_sample_shifts_and_interpolates():
    img = np.arange(5 * 6 * 2, dtype=np.float32).reshape(1, 5, 6, 2)
    ones = tf.ones([1, 5, 6])
    right = flow.bilinear_sample(img, ones, 0 * ones).numpy()
    np.testing.assert_array_equal(right[:, :, :-1], img[:, :, 1:])
    np.testing.assert_array_equal(right[:, :, -1], img[:, :, -1])   # clamped at the border
    half = flow.bilinear_sample(img, 0 * ones, 0.5 * ones).numpy()
    np.testing.assert_allclose(half[:, :-1], 0.5 * (img[:, :-1] + img[:, 1:]))
    warped = flow.warp(img, tf.stack([0 * ones, -ones], -1)).numpy()   # flow (0, -1): row above
    np.testing.assert_array_equal(warped[:, 1:], img[:, :-1])


@pytest.mark.parametrize("motion", [(3.0, 0.0), (0.0, -5.0), (6.6, 2.2), (-9.0, 7.0)])
def test_symmetric_flow_finds_translations_and_their_midpoint(motion):
    """Content moving by ``motion`` from f0 to f1: d = motion / 2 (sub-pixel), and the midpoint
    warp is far closer to the true middle frame than blending the two."""
    img = _texture(112, 112)
    dx, dy = motion
    f0, f1 = _translated(img, 0, 0, 64), _translated(img, dx, dy, 64)
    truth = _translated(img, dx / 2, dy / 2, 64)
    d = flow.symmetric_flow(f0[None], f1[None]).numpy()[0]
    inner = (slice(12, -12), slice(12, -12))
    np.testing.assert_allclose(np.median(d[inner].reshape(-1, 2), 0), [dx / 2, dy / 2], atol=0.25)
    mid = flow.midpoint(f0[None], f1[None], d[None]).numpy()[0]
    err_mc = np.abs(mid - truth)[inner].mean()
    err_blend = np.abs(0.5 * (f0 + f1) - truth)[inner].mean()
    assert err_mc < 0.2 * err_blend, (err_mc, err_blend)


@pytest.mark.parametrize("motion,size", [((24.0, -10.0), 96), ((44.0, 18.0), 176)])
def test_symmetric_flow_finds_large_motion(motion, size):
    """Fast motion (12 and 22 px of ``d`` at LR): the pyramid grows with the frame (a 176 px frame
    gets a 4th level, 3 levels reach only 15 px), the field is right in the interior and the
    midpoint far better than blending."""
    n = size + 120   # coarse and fine detail (a single scale aliases at the coarsest level)
    img = (_texture(n, n, seed=5, freq=0.1) + 0.5 * _texture(n, n, seed=7, freq=0.5)) / 1.5
    dx, dy = motion
    f0, f1 = _translated(img, 0, 0, size), _translated(img, dx, dy, size)
    truth = _translated(img, dx / 2, dy / 2, size)
    d = flow.symmetric_flow(f0[None], f1[None]).numpy()[0]
    m = int(max(abs(dx), abs(dy)) / 2) + 6
    inner = (slice(m, -m), slice(m, -m))
    err = np.abs(d[inner] - [dx / 2, dy / 2]).max(-1)
    assert np.median(err) < 0.3 and np.mean(err < 1.0) > 0.7, np.percentile(err, [50, 70, 90])
    mid = flow.midpoint(f0[None], f1[None], d[None]).numpy()[0]
    err_mc = np.abs(mid - truth)[inner].mean()
    err_blend = np.abs(0.5 * (f0 + f1) - truth)[inner].mean()
    assert err_mc < 0.3 * err_blend, (err_mc, err_blend)


@pytest.mark.parametrize("h,w", [(40, 64), (176, 200), (330, 340)])
def test_known_frame_size_traces_only_the_levels_it_runs(h, w):
    """The levels a frame size uses (3, 4 or 5) are chosen while tracing when the size is known
    (fewer ops to trace and run) and with tf.cond when it is not (a SavedModel): same field."""
    rng = np.random.default_rng(3)
    f0 = rng.uniform(0, 1, (1, h, w, 3)).astype(np.float32)
    f1 = np.roll(f0, (3, -5), axis=(1, 2))
    known = tf.function(flow.symmetric_flow)
    unknown = tf.function(flow.symmetric_flow, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32)] * 2)
    np.testing.assert_allclose(known(f0, f1).numpy(), unknown(f0, f1).numpy(), atol=1e-6)

    def op_count(concrete):   # the graph's ops and those of its tf.cond branches
        graph = concrete.graph.as_graph_def()
        return len(graph.node) + sum(len(f.node_def) for f in graph.library.function)

    n_known, n_unknown = op_count(known.get_concrete_function(f0, f1)), op_count(
        unknown.get_concrete_function())
    assert n_known < 0.8 * n_unknown, (n_known, n_unknown)


def test_midpoint_at_the_border_of_a_pan():
    """Content entering / leaving the picture: the border strip of the middle frame is seen in one
    frame only; the field is extrapolated there and the midpoint takes that frame alone."""
    img = (_texture(160, 160, seed=5, freq=0.1) + 0.5 * _texture(160, 160, seed=7, freq=0.5)) / 1.5
    f0, f1 = _translated(img, 0, 0, 64), _translated(img, -16, 0, 64)   # content moves left
    truth = _translated(img, -8, 0, 64)
    d = flow.symmetric_flow(f0[None], f1[None]).numpy()[0]
    np.testing.assert_allclose(d[8:-8, :8], np.broadcast_to([-8.0, 0.0], d[8:-8, :8].shape),
                               atol=0.5)
    mid = flow.midpoint(f0[None], f1[None], d[None]).numpy()[0]
    strip = (slice(8, -8), slice(0, 8))    # left: only in f0 (f1 has moved it out of the picture)
    err_mc = np.abs(mid - truth)[strip].mean()
    err_blend = np.abs(0.5 * (f0 + f1) - truth)[strip].mean()
    assert err_mc < 0.15 * err_blend, (err_mc, err_blend)


def test_motion_base_beats_blend_on_real_fast_motion(shared_dir):
    """People walking (10 fps), full 768x432 frames, input x4 smaller (192x108): the motion base's
    new frame is far closer to the real one than blending (bench/quality.py's protocol)."""
    from itertools import islice

    from zsm_tf.degradation import downscale_image as downscale
    from zsm_tf.inference import to_uint8
    from zsm_tf.io import open_source
    from zsm_tf.metrics import psnr_y

    with open_source(shared_dir / "videos" / "one-by-one-person-detection.mp4") as src:
        hr = list(islice(iter(src), 846, 849))
    lr = np.stack([downscale(hr[0]), downscale(hr[2])])[None] / np.float32(255)
    base = ZoomingSlowMo.motion_base(tf.constant(lr)).numpy()[0]
    blend = bicubic_blend(tf.constant(lr)).numpy()[0]
    psnr_mc, psnr_blend = psnr_y(to_uint8(base[1]), hr[1]), psnr_y(to_uint8(blend[1]), hr[1])
    assert psnr_mc > psnr_blend + 2.0, (psnr_mc, psnr_blend)


def test_still_frames_give_zero_motion():
    img = _texture(40, 48)[None]
    np.testing.assert_array_equal(flow.symmetric_flow(img, img).numpy(), 0.0)


def test_upscale_flow_scales_values_and_size():
    d = tf.constant(np.full((1, 3, 5, 2), [1.5, -0.5], np.float32))
    up = flow.upscale_flow(d, 4).numpy()
    assert up.shape == (1, 12, 20, 2)
    np.testing.assert_allclose(up, np.full((1, 12, 20, 2), [6.0, -2.0]))


def test_motion_residual_starts_at_its_base_and_keeps_bicubic_frames():
    """A fresh residual='motion' model outputs its motion base: kept frames = bicubic x4, new
    frames motion-compensated (= blended for a still clip, closer than blending for a pan)."""
    model = ZoomingSlowMo(**TINY, residual="motion")
    assert model.get_config()["residual"] == "motion"
    img = _texture(96, 96, seed=1, freq=0.5)
    pan = np.stack([_translated(img, 2.0 * i, 0, 48) for i in range(5)])  # 2 px per frame
    frames = pan[0::2][None]  # inputs 0, 2, 4: 4 px between inputs
    out = model(frames).numpy()
    base = ZoomingSlowMo.motion_base(tf.constant(frames)).numpy()
    bicubic = bicubic_blend(tf.constant(frames)).numpy()
    np.testing.assert_allclose(out, base, atol=1e-6)
    np.testing.assert_allclose(out[:, 0::2], bicubic[:, 0::2], atol=1e-6)
    truth = upscale_frames(tf.constant(pan[None])).numpy()[:, 1::2]
    inner = (slice(None), slice(None), slice(40, -40), slice(40, -40))
    err_mc = np.abs(out[:, 1::2] - truth)[inner].mean()
    err_blend = np.abs(bicubic[:, 1::2] - truth)[inner].mean()
    assert err_mc < 0.3 * err_blend, (err_mc, err_blend)
    still = np.repeat(frames[:, :1], 3, axis=1)
    np.testing.assert_allclose(ZoomingSlowMo.motion_base(tf.constant(still)).numpy(),
                               bicubic_blend(tf.constant(still)).numpy(), atol=1e-6)


@pytest.mark.parametrize("residual", ["motion", "bicubic"])
def test_bfloat16_model_keeps_its_base_in_float32(residual):
    """Under mixed_bfloat16 the network computes in bfloat16 but the global skip's base and the
    sum stay float32: a fresh model (zero residual) gives its float32 base to float32 rounding,
    not to bfloat16's ~4e-3 (which cost 0.1 dB on a fast pan's new frames)."""
    model = ZoomingSlowMo(**TINY, residual=residual, dtype="mixed_bfloat16")
    frames = np.stack([_texture(48, 48, seed=s, freq=0.5) for s in range(3)])[None]
    out = model(frames)
    assert out.dtype == tf.float32
    base = (ZoomingSlowMo.motion_base if residual == "motion" else bicubic_blend)(
        tf.constant(frames)).numpy()
    np.testing.assert_allclose(out.numpy(), base, atol=2e-6)
    np.testing.assert_allclose(model(frames, first_output=3).numpy(), base[:, 3:], atol=2e-6)


def test_motion_residual_round_trips_through_load_model(tmp_path):
    from zsm_tf.loading import load_model

    model = ZoomingSlowMo(**TINY, residual="motion")
    model.save_weights(str(tmp_path / "w.weights.h5"))
    (tmp_path / "model_config.json").write_text(
        __import__("json").dumps(model.get_config()))
    assert load_model(tmp_path / "w.weights.h5").residual == "motion"


def test_motion_model_exports_with_stock_ops(tmp_path):
    """The SavedModel of a residual='motion' model runs the motion estimate in stock ops and
    serves what the Keras model computes."""
    from zsm_tf.commands import export as zexport

    model = ZoomingSlowMo(**TINY, residual="motion")
    rng = np.random.default_rng(4)
    for var in model.variables:
        var.assign(rng.normal(scale=0.05, size=var.shape))
    path = zexport.export_model(model, str(tmp_path / "mc"), warmup_shapes=[], check=False)
    img = _texture(64, 64, seed=2)
    frames = np.stack([_translated(img, 3.0 * i, 1.0 * i, 16) for i in range(3)])[None]
    served = tf.saved_model.load(path).signatures["predict_float"](frames=tf.constant(frames))
    np.testing.assert_allclose(served["frames"].numpy(), np.clip(model(frames).numpy(), 0, 1),
                               atol=1e-5)


def test_bilinear_sample_in_bfloat16_keeps_exact_coordinates():
    """bfloat16 holds integers exactly only up to 256: positions in a 640-wide frame must still
    index the right pixel (they are computed in float32), never past the end."""
    rng = np.random.default_rng(3)
    img = rng.uniform(size=(1, 3, 640, 1)).astype(np.float32)
    zero = tf.zeros([1, 3, 640])
    got = flow.bilinear_sample(tf.cast(img, tf.bfloat16), zero, zero)
    np.testing.assert_array_equal(got.numpy().astype(np.float32),
                                  tf.cast(tf.cast(img, tf.bfloat16), tf.float32).numpy())
    shifted = flow.bilinear_sample(tf.cast(img, tf.bfloat16), zero + 1.0, zero)
    np.testing.assert_array_equal(shifted.numpy()[0, :, 500].astype(np.float32),
                                  tf.cast(tf.cast(img[0, :, 501], tf.bfloat16), tf.float32).numpy())


def test_compiled_midpoint_matches_the_tf_one_and_is_used_only_in_the_scope():
    """ZsmTf>FlowMidpoint (the upscaler's CPU path) against flow.midpoint's TF ops: samples
    inside, across and far beyond every border, zero and sub-pixel displacements."""
    from zsm_tf.ops import winograd

    if not winograd.available():
        pytest.skip("the compiled ops do not build here")
    rng = np.random.default_rng(5)
    f0 = tf.constant(rng.uniform(size=(2, 23, 41, 3)), tf.float32)
    f1 = tf.constant(rng.uniform(size=(2, 23, 41, 3)), tf.float32)
    d = rng.normal(size=(2, 23, 41, 2)) * 6
    d[0, :4] = 0.0                     # no motion
    d[0, 4:8] = rng.uniform(-0.5, 0.5, size=(4, 41, 2))
    d[1, :2] = 80.0                    # far outside on one side
    d = tf.constant(d, tf.float32)
    want = flow.midpoint(f0, f1, d).numpy()

    def scoped(*args):
        with winograd.scope(4, fused_deform=True):
            return flow.midpoint(*args)

    ops = {op.type for op in tf.function(scoped).get_concrete_function(f0, f1, d).graph.get_operations()}
    assert "ZsmTf>FlowMidpoint" in ops and "GatherV2" not in ops
    got = tf.function(scoped)(f0, f1, d).numpy()
    assert np.abs(got - want).max() < 1e-5 and np.abs(want).max() > 0.5
    np.testing.assert_array_equal(got[0, :4], want[0, :4])
    plain = {op.type for op in tf.function(flow.midpoint).get_concrete_function(f0, f1, d).graph.get_operations()}
    assert "ZsmTf>FlowMidpoint" not in plain
    with pytest.raises(tf.errors.InvalidArgumentError, match="d must be"):
        scoped(f0, f1, d[:, :, :40])
    # NaN displacements give NaN (their samples read the clamped corner, never out of range:
    # TF's gathers would fail); an empty batch is empty
    nan = scoped(f0, f1, tf.fill(tf.shape(d), float("nan"))).numpy()
    assert nan.shape == f0.shape and np.isnan(nan).all()
    assert scoped(f0[:0], f1[:0], d[:0]).shape == (0, 23, 41, 3)


def test_compiled_match_terms_give_the_same_flow_bit_for_bit():
    """ZsmTf>FlowMatchTerms (the upscaler's CPU path of the block matching) computes the TF ops'
    per-pixel terms with the same float operations: the same bits, so the same field."""
    from zsm_tf.ops import custom_op, winograd

    if not winograd.available():
        pytest.skip("the compiled ops do not build here")
    rng = np.random.default_rng(8)
    b, h, w, k = 2, 21, 38, 5
    f0 = tf.constant(rng.uniform(size=(b, h, w, 3)), tf.float32)
    f1 = tf.constant(rng.uniform(size=(b, h, w, 3)), tf.float32)
    d = rng.normal(size=(k * b, h, w, 2)) * 4
    d[0] = 0.0
    d[1, :3] = 50.0                    # far outside: nothing valid
    d = tf.constant(d, tf.float32)
    a0, a1 = tf.tile(f0, [k, 1, 1, 1]), tf.tile(f1, [k, 1, 1, 1])
    valid = flow._inside(a0, d, -1.0) * flow._inside(a1, d, 1.0)
    diff = tf.reduce_mean(tf.abs(flow.warp(a0, d, -1.0) - flow.warp(a1, d, 1.0)), axis=-1)
    want = tf.stack([diff * valid, valid], -1).numpy()
    got = custom_op.load().zsm_tf_flow_match_terms(f0, f1, d).numpy()
    np.testing.assert_array_equal(got, want)
    assert custom_op.load().zsm_tf_flow_match_terms(f0[:0], f1[:0], d[:0]).shape == (0, h, w, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="d must be"):
        custom_op.load().zsm_tf_flow_match_terms(f0, f1, d[:3])
    assert want[..., 1].min() == 0.0 and want[..., 1].max() == 1.0

    img = _texture(48, 64, seed=3)
    a = tf.constant(np.stack([img, img[::-1]]))
    c = tf.constant(np.stack([np.roll(img, 3, axis=1), np.roll(img[::-1], -2, axis=0)]))

    def scoped(x, y):
        with winograd.scope(4, fused_deform=True):
            return flow.symmetric_flow(x, y)

    graph = {op.type for op in tf.function(scoped).get_concrete_function(a, c).graph.get_operations()}
    assert "ZsmTf>FlowMatchTerms" in graph and "Tile" not in graph   # no tiled images, no warps
    np.testing.assert_array_equal(tf.function(scoped)(a, c).numpy(), flow.symmetric_flow(a, c).numpy())
