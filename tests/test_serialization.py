"""Keras serialisation of every layer and of the model, like keras-hub's
``run_serialization_test``: the config round-trips exactly (no defaults merged in), the layer
rebuilt from it (and from ``keras.saving.serialize_keras_object``) computes the same outputs after
``set_weights``, and ``.keras`` files keep float64 and mixed-precision models as they were."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from zsm_tf import ZoomingSlowMo, layers

NF, G = 8, 2
RNG = np.random.default_rng(0)


def _x(*shape):
    return tf.constant(RNG.uniform(size=shape).astype(np.float32))


def _pyr():
    return [_x(2, 8, 8, NF), _x(2, 4, 4, NF), _x(2, 2, 2, NF)]


# (layer, positional call arguments): every layer in zsm_tf.layers, at non-default sizes
CASES = [
    (layers.StridedConv2D(4, 3), lambda: [_x(2, 8, 8, 3)]),
    (layers.DeformableConv2D(NF, NF, G, deform_impl="gather"), lambda: [_x(2, 8, 8, NF)] * 2),
    (layers.StateAlignment(NF, G, deform_impl="gather"), lambda: [_x(2, 8, 8, NF)] * 2),
    (layers.DeformableConvLSTMCell(NF, G, deform_impl="gather"),
     lambda: [_x(2, 8, 8, NF), [_x(2, 8, 8, NF), _x(2, 8, 8, NF)]]),
    (layers.BiDeformableConvLSTM(NF, G, deform_impl="gather"), lambda: [_x(1, 3, 8, 8, NF)]),
    (layers.FeatureExtractor(NF, 2), lambda: [_x(2, 8, 8, 3)]),
    (layers.FeaturePyramid(NF), lambda: [_x(2, 8, 8, NF)]),
    (layers.FrameFeatureInterpolation(NF, G, deform_impl="gather"), lambda: [_pyr(), _pyr()]),
    (layers.PCDAlign(NF, G, deform_impl="gather"), lambda: [_pyr(), _pyr()]),
    (layers.PixelShuffle(2), lambda: [_x(2, 4, 4, 8)]),
    (layers.Reconstructor(NF, 2), lambda: [_x(2, 4, 4, NF)]),
    (layers.ResidualBlockNoBN(NF), lambda: [_x(2, 8, 8, NF)]),
    (layers.ResidualTrunk(NF, 3), lambda: [_x(2, 8, 8, NF)]),
]


def test_every_layer_is_covered():
    assert {type(layer).__name__ for layer, _ in CASES} == set(layers.__all__)


def _randomise(layer):
    """Non-zero weights everywhere (the offset/mask convolutions start at zero)."""
    for var in layer.weights:
        var.assign(RNG.normal(scale=0.1, size=var.shape).astype(var.dtype))


def _flat(out):
    return [np.asarray(t) for t in tf.nest.flatten(out)]


@pytest.mark.parametrize("layer,args", CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_layer_serialization(layer, args):
    config = layer.get_config()
    revived = type(layer).from_config(config)
    assert revived.get_config() == config
    via_keras = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(via_keras) is type(layer) and via_keras.get_config() == config

    inputs = args()
    expected = _flat(layer(*inputs))
    _randomise(layer)
    expected = _flat(layer(*inputs))
    for clone in (revived, via_keras):
        clone(*inputs)  # builds any lazily created weights
        assert len(clone.weights) == len(layer.weights)
        clone.set_weights(layer.get_weights())
        for a, b in zip(_flat(clone(*inputs)), expected):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert any(np.abs(e).max() > 1e-3 for e in expected)  # outputs that say something


def test_layer_config_keeps_dtype():
    layer = layers.PCDAlign(NF, G, deform_impl="gather", dtype="float64")
    revived = layers.PCDAlign.from_config(layer.get_config())
    assert revived.dtype_policy.name == "float64"
    revived.build()
    assert {w.dtype for w in revived.weights} == {"float64"}


@pytest.mark.parametrize("dtype", ["float64", "mixed_bfloat16"])
def test_model_keras_file_keeps_dtype(tmp_path, dtype):
    model = ZoomingSlowMo(nf=NF, groups=G, front_rbs=1, back_rbs=1, deform_impl="gather",
                          dtype=dtype)
    _randomise(model)
    frames = RNG.uniform(size=(1, 2, 8, 8, 3)).astype(np.float32)
    expected = model(frames).numpy()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.dtype_policy.name == dtype
    assert {w.dtype for w in loaded.weights} == {"float64" if dtype == "float64" else "float32"}
    out = loaded(frames).numpy()
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)
    # the same dtype through the project's loader (model_config.json + weights)
    from zsm_tf.loading import load_model

    model.save_weights(tmp_path / "w.weights.h5")
    (tmp_path / "model_config.json").write_text(json.dumps(model.get_config()))
    assert load_model(tmp_path / "w.weights.h5", deform_impl="gather").dtype_policy.name == dtype


def test_compile_defaults_to_the_papers_setup(tmp_path):
    from zsm_tf.recipe.optimizer import TorchAdam
    from zsm_tf.training import CharbonnierLoss, CosineAnnealingRestarts

    model = ZoomingSlowMo(nf=NF, groups=1, front_rbs=1, back_rbs=1, deform_impl="gather")
    model.compile()
    opt = model.optimizer
    assert isinstance(opt, TorchAdam)
    assert (opt.beta_1, opt.beta_2, opt.epsilon) == (0.9, 0.99, 1e-8)
    sched = opt._learning_rate
    assert isinstance(sched, CosineAnnealingRestarts)
    assert sched.initial_learning_rate == 4e-4 and sched.periods == [150000] * 4
    assert isinstance(model.loss, CharbonnierLoss) and model.loss.reduction == "sum"
    assert model.loss.eps == 1e-3
    # a compiled model comes back compiled the same way
    model.save(tmp_path / "c.keras")
    loaded = keras.saving.load_model(tmp_path / "c.keras")
    assert isinstance(loaded.optimizer, TorchAdam) and loaded.loss.reduction == "sum"
    # overrides are Keras's
    model.compile(optimizer="sgd", loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.SGD)
