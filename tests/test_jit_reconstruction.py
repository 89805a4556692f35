"""The XLA-compiled reconstruction at inference: same outputs, chosen where it pays, never in
training or in exports."""
import numpy as np
import tensorflow as tf

from zsm_tf import ZoomingSlowMo
from zsm_tf import precision as prec
from zsm_tf.inference import SpaceTimeUpscaler


def tiny():
    tf.keras.utils.set_random_seed(7)
    model = ZoomingSlowMo(nf=8, groups=1, front_rbs=1, back_rbs=2, residual="motion",
                          deform_impl="gather")
    last = model.reconstructor.conv_last   # zero with a residual: make the network visible
    last.kernel.assign(tf.random.normal(last.kernel.shape, stddev=0.05))
    return model


def test_jit_reconstruction_gives_the_same_outputs_and_compiles_once_per_model():
    model = tiny()
    x = tf.random.stateless_uniform([1, 3, 16, 24, 3], seed=[1, 2])
    plain = model(x, training=False).numpy()
    fn = tf.function(lambda v, k: model(v, training=False, first_output=k, jit_reconstruction=True))
    for k in (0, 2):
        np.testing.assert_allclose(fn(x, tf.constant(k)).numpy(), plain[:, k:], atol=2e-6)
    compiled = model.__dict__["_recon_jit"]
    assert compiled._jit_compile is True
    fn(x, tf.constant(1))
    assert model.__dict__["_recon_jit"] is compiled   # one compiled function per model
    assert np.abs(plain).max() > 0.05   # the network part is visible in the output


def test_training_ignores_jit_reconstruction():
    model = tiny()
    x = tf.random.stateless_uniform([1, 2, 16, 16, 3], seed=[3, 4])
    with tf.GradientTape() as tape:
        y = model(x, training=True, jit_reconstruction=True)
        loss = tf.reduce_mean(y)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)
    assert "_recon_jit" not in model.__dict__


def test_resolve_jit(monkeypatch):
    monkeypatch.delenv(prec.JIT_ENV, raising=False)
    assert prec.resolve_jit("auto", "float32") is True
    assert prec.resolve_jit("auto", "bfloat16") is False   # oneDNN's bf16 kernels are faster
    assert prec.resolve_jit(True, "bfloat16") is True
    assert prec.resolve_jit(False, "float32") is False
    monkeypatch.setenv(prec.JIT_ENV, "0")
    assert prec.resolve_jit("auto", "float32") is False


def test_upscaler_uses_it_by_default_in_float32_with_the_same_frames(monkeypatch):
    monkeypatch.delenv(prec.JIT_ENV, raising=False)
    monkeypatch.setenv(prec.WINOGRAD_ENV, "0")   # XLA is the default where Winograd is off
    model = tiny()
    rng = np.random.default_rng(0)
    clip = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(4)]
    default = SpaceTimeUpscaler(model, window=3, precision="float32")
    off = SpaceTimeUpscaler(model, window=3, precision="float32", jit=False)
    assert default.jit is True and off.jit is False
    a = list(default.stream(iter(clip)))
    b = list(off.stream(iter(clip)))
    assert len(a) == len(b) == 7
    assert max(np.abs(x.astype(int) - y.astype(int)).max() for x, y in zip(a, b)) <= 1
    assert "_recon_jit" in model.__dict__


def test_upscaler_keeps_onednn_kernels_in_bfloat16(monkeypatch):
    monkeypatch.delenv(prec.JIT_ENV, raising=False)
    assert SpaceTimeUpscaler(tiny(), window=3, precision="bfloat16").jit is False
