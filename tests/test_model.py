"""The whole network: parity with the authors' output, structure, batching, serialisation."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from zsm_tf import ZoomingSlowMo
from zsm_tf.official_checkpoint import StateDictMismatchError, infer_config, load_official_state_dict, read_state_dict


@pytest.fixture(scope="module")
def golden(shared_dir):
    path = shared_dir / "golden" / "zsm_small.npz"
    with np.load(path) as d:
        frames = np.transpose(d["input"], (0, 1, 3, 4, 2))
        output = np.transpose(d["output"], (0, 1, 3, 4, 2))
    return read_state_dict(str(path)), frames, output


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-9)])
def test_parity_with_authors_network(golden, shared_dir, dtype, tol):
    sd, frames, expected = golden
    config = infer_config(sd)
    meta = json.loads((shared_dir / "golden" / "models.json").read_text())["zsm_small"]
    assert config == {k: meta[k] for k in ("nf", "groups", "front_rbs", "back_rbs")}
    model = ZoomingSlowMo(**config, deform_impl="gather", dtype=dtype)
    assert model.count_params() == meta["params"]
    load_official_state_dict(model, sd)
    out = model(frames.astype(dtype)).numpy()
    assert out.shape == expected.shape == tuple(
        meta["output_shape"][i] for i in (0, 1, 3, 4, 2))
    err = np.abs(out - expected).max()
    assert err <= tol, f"max abs error {err:.3g} > {tol}"
    # the check means something: a slightly different network is far off
    assert np.abs(expected).max() > 100 * tol


def test_default_size_matches_official_checkpoint(shared_dir):
    ref = json.loads((shared_dir / "reference" / "official_zsm_state_dict.json").read_text())
    model = ZoomingSlowMo()
    assert model.count_params() == ref["total_parameters"] == 11_102_771
    params = model.torch_params()
    assert set(params) == set(ref["tensors"])
    for name, shape in ref["tensors"].items():
        shape = tuple(shape)
        expected = (shape[2], shape[3], shape[1], shape[0]) if len(shape) == 4 else shape
        assert tuple(params[name].shape) == expected, name


def authors_way(model, frames):
    """The reference forward pass step by step (one pair, one direction, one step at a time),
    from our blocks: checks the batching of pairs and directions done in ``ZoomingSlowMo.call``."""
    B, N, H, W, _ = frames.shape
    pyr = model.pyramid(model.feature_extractor(tf.reshape(frames, [B * N, H, W, 3])))
    pyr = [tf.reshape(lv, [B, N] + list(lv.shape[1:])) for lv in pyr]
    seq = []
    for i in range(N - 1):
        f1, f2 = [lv[:, i] for lv in pyr], [lv[:, i + 1] for lv in pyr]
        if i == 0:
            seq.append(f1[0])
        seq += [model.interpolation(f1, f2), f2[0]]
    cell = model.convlstm.cell

    def run(steps):
        h = c = tf.zeros_like(steps[0])
        outs = []
        for x in steps:
            out, (h, c) = cell(x, [h, c])
            outs.append(out)
        return outs

    fwd, bwd = run(seq), run(seq[::-1])[::-1]
    outs = []
    for f, b in zip(fwd, bwd):
        feat = model.convlstm.conv_1x1(tf.concat([f, b], -1))
        outs.append(model.reconstructor(feat))
    return tf.stack(outs, 1)


def test_batched_forward_equals_step_by_step_reference():
    model = ZoomingSlowMo(nf=8, groups=2, front_rbs=1, back_rbs=1, deform_impl="gather",
                          dtype="float64")
    rng = np.random.default_rng(1)
    # make the deformable sampling move
    for var in model.variables:
        if "conv_offset_mask" in var.path:
            var.assign(rng.normal(scale=0.05, size=var.shape))
    frames = rng.uniform(size=(2, 4, 8, 12, 3))
    out = model(frames).numpy()
    assert out.shape == (2, 7, 32, 48, 3)
    np.testing.assert_allclose(out, authors_way(model, tf.constant(frames)).numpy(), atol=1e-10)
    # batch items are independent
    np.testing.assert_allclose(out[1:], model(frames[1:]).numpy(), atol=1e-10)


def test_any_sequence_length_and_unknown_size_in_graph():
    model = ZoomingSlowMo(nf=8, groups=1, front_rbs=1, back_rbs=1, deform_impl="gather")
    fn = tf.function(model, input_signature=[tf.TensorSpec([None, None, None, None, 3])])
    for n, h, w in [(2, 4, 8), (5, 8, 4)]:
        out = fn(tf.random.uniform([1, n, h, w, 3]))
        assert tuple(out.shape) == (1, 2 * n - 1, 4 * h, 4 * w, 3)


def test_bad_input_sizes_are_rejected():
    model = ZoomingSlowMo(nf=8, groups=1, front_rbs=1, back_rbs=1, deform_impl="gather")
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiples of 4"):
        model(tf.zeros([1, 2, 6, 8, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="N >= 2"):
        model(tf.zeros([1, 1, 8, 8, 3]))


def test_keras_and_weights_round_trip(tmp_path):
    model = ZoomingSlowMo(nf=8, groups=2, front_rbs=1, back_rbs=2, deform_impl="gather")
    rng = np.random.default_rng(2)
    for var in model.variables:
        var.assign(rng.normal(scale=0.1, size=var.shape))
    frames = rng.uniform(size=(1, 3, 8, 8, 3)).astype(np.float32)
    expected = model(frames).numpy()

    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, ZoomingSlowMo)
    assert loaded.get_config()["back_rbs"] == 2
    np.testing.assert_allclose(loaded(frames).numpy(), expected, atol=1e-6)

    model.save_weights(tmp_path / "m.weights.h5")
    fresh = ZoomingSlowMo.from_config(model.get_config())
    assert not np.allclose(fresh(frames).numpy(), expected, atol=1e-3)
    fresh.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(fresh(frames).numpy(), expected, atol=1e-6)


def test_layers_round_trip_through_config():
    from zsm_tf import layers

    for layer in [layers.ResidualBlockNoBN(8), layers.PixelShuffle(2), layers.StridedConv2D(4, 3),
                  layers.DeformableConv2D(8, 8, 2), layers.PCDAlign(8, 2),
                  layers.DeformableConvLSTMCell(8, 2), layers.Reconstructor(8, 1)]:
        config = layer.get_config()
        clone = layer.__class__.from_config(config)
        assert clone.get_config() == config


def test_pixel_shuffle_uses_pytorch_channel_order():
    from zsm_tf.layers import PixelShuffle

    x = np.arange(2 * 3 * 8, dtype=np.float32).reshape(1, 2, 3, 8)  # C=2, r=2
    out = PixelShuffle(2)(x).numpy()
    for c in range(2):
        for i in range(2):
            for j in range(2):
                np.testing.assert_array_equal(out[0, i::2, j::2, c], x[0, :, :, c * 4 + i * 2 + j])


def test_state_dict_errors_name_the_tensors(golden):
    sd, _, _ = golden
    model = ZoomingSlowMo(**infer_config(sd), deform_impl="gather")
    before = [v.numpy().copy() for v in model.variables[:3]]
    bad = dict(sd)
    del bad["conv_first.bias"]
    bad["extra.weight"] = np.zeros(3)
    bad["HRconv.weight"] = np.zeros((64, 64, 1, 1))
    with pytest.raises(StateDictMismatchError) as err:
        load_official_state_dict(model, bad)
    msg = str(err.value)
    assert "missing: conv_first.bias" in msg
    assert "unexpected: extra.weight" in msg
    assert "mis-shaped: HRconv.weight" in msg
    for b, v in zip(before, model.variables[:3]):  # nothing assigned
        np.testing.assert_array_equal(b, v.numpy())
    # a DataParallel "module." prefix is accepted
    load_official_state_dict(model, {"module." + k: v for k, v in sd.items()})


def test_convert_weights_cli(golden, shared_dir, tmp_path):
    from zsm_tf.cli import main

    out = tmp_path / "zsm_small.weights.h5"
    assert main(["convert-weights", str(shared_dir / "golden" / "zsm_small.npz"), str(out)]) == 0
    config = json.loads((tmp_path / "model_config.json").read_text())
    assert config["window"] == 4   # the record: the authors' training window (7-frame clips)
    model = ZoomingSlowMo.from_config(config)   # a record is a config
    model.load_weights(out)
    sd, frames, expected = golden
    assert np.abs(model(frames.astype(np.float32)).numpy() - expected).max() <= 1e-5
    assert main(["convert-weights", str(tmp_path / "nope.pth"), str(out)]) == 2


def test_tf_checkpoint_restores_every_variable(tmp_path):
    """Training checkpoints (tf.train.Checkpoint) must see every weight, residual blocks included."""
    model = ZoomingSlowMo(nf=8, groups=1, front_rbs=2, back_rbs=2, deform_impl="gather")
    rng = np.random.default_rng(3)
    for var in model.variables:
        var.assign(rng.normal(size=var.shape))
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    saved = {name for name, _ in tf.train.list_variables(path)
             if name.startswith("model/") and name.endswith("/.ATTRIBUTES/VARIABLE_VALUE")}
    assert len(saved) == len(model.variables)
    fresh = ZoomingSlowMo.from_config(model.get_config())
    tf.train.Checkpoint(model=fresh).restore(path).assert_existing_objects_matched()
    for a, b in zip(model.variables, fresh.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_mixed_precision_outputs_float32_and_blocks_differ():
    model = ZoomingSlowMo(nf=8, groups=1, front_rbs=2, back_rbs=1, deform_impl="gather",
                          dtype="mixed_bfloat16")
    out = model(tf.random.uniform([1, 2, 8, 8, 3]))
    assert out.dtype == tf.float32 and out.shape == (1, 3, 32, 32, 3)
    blocks = model.feature_extractor.feature_extraction.blocks
    assert not np.allclose(blocks[0].conv1.kernel.numpy(), blocks[1].conv1.kernel.numpy())


def test_bicubic_residual_starts_at_bicubic_plus_blending(tmp_path):
    """residual='bicubic' adds bicubic x4 (frames) / its neighbour average (new frames); conv_last
    starts at zero, so a fresh model is exactly that baseline, and it survives serialisation."""
    model = ZoomingSlowMo(nf=8, groups=2, front_rbs=1, back_rbs=1, residual="bicubic",
                          deform_impl="gather")
    rng = np.random.default_rng(3)
    frames = rng.uniform(size=(2, 3, 8, 12, 3)).astype(np.float32)
    up = tf.image.resize(frames.reshape(6, 8, 12, 3), [32, 48], method="bicubic").numpy()
    up = up.reshape(2, 3, 32, 48, 3)
    want = np.stack([up[:, 0], (up[:, 0] + up[:, 1]) / 2, up[:, 1], (up[:, 1] + up[:, 2]) / 2,
                     up[:, 2]], axis=1)
    np.testing.assert_allclose(model(frames).numpy(), want, atol=1e-6)

    # the authors' network (default) has no skip: same weights, different output
    plain = ZoomingSlowMo(nf=8, groups=2, front_rbs=1, back_rbs=1, deform_impl="gather")
    for var in model.variables:
        var.assign(rng.normal(scale=0.1, size=var.shape))
    plain.set_weights(model.get_weights())
    out = model(frames).numpy()
    np.testing.assert_allclose(out - plain(frames).numpy(), want, atol=1e-5)

    assert model.get_config()["residual"] == "bicubic" and plain.get_config()["residual"] == "none"
    model.save(tmp_path / "r.keras")
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "r.keras")(frames).numpy(), out,
                               atol=1e-6)
    with pytest.raises(ValueError, match="residual"):
        ZoomingSlowMo(nf=8, groups=1, front_rbs=1, back_rbs=1, residual="bilinear")


def test_load_model_keeps_the_residual(tmp_path):
    from zsm_tf.loading import load_model

    model = ZoomingSlowMo(nf=8, groups=2, front_rbs=1, back_rbs=1, residual="bicubic")
    model.save_weights(tmp_path / "w.weights.h5")
    (tmp_path / "model_config.json").write_text(json.dumps(model.get_config()))
    assert load_model(tmp_path / "w.weights.h5").residual == "bicubic"
    # configs written before the option existed load as the authors' network
    cfg = {k: v for k, v in model.get_config().items() if k != "residual"}
    (tmp_path / "model_config.json").write_text(json.dumps(cfg))
    assert load_model(tmp_path / "w.weights.h5").residual == "none"
