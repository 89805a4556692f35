"""Training like the paper: two Adam steps on the authors' batch equal theirs.

``../shared/golden/train_step_small.npz`` holds two steps of the authors' training code
(float64; Charbonnier *sum*, ``torch.optim.Adam``): the weights before, after step 1 and after
step 2. The loss and the optimizer come from ``configs/zsm_vimeo.yaml`` (the paper's config)
through the functions the trainer uses (:func:`replica_loss`, :func:`make_adam`).
"""
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from zsm_tf import ZoomingSlowMo
from zsm_tf.official_checkpoint import load_official_state_dict, torch_to_keras
from zsm_tf.recipe.loss import replica_loss
from zsm_tf.recipe.optimizer import TorchAdam, make_adam
from zsm_tf.training import load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def float64():
    """floatx float64: Keras keeps the learning rate in a floatx variable (4e-4 in float32 is
    2.5e-8 off, which moves the weights by up to 1e-11)."""
    before = keras.config.floatx()
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx(before)


def _state(d, prefix):
    return {k[len(prefix) + 1:]: d[k] for k in d.files if k.startswith(prefix + "/")}


def _max_err(model, state):
    return max(float(np.abs(torch_to_keras(n, state[n], v.shape) - v.numpy()).max())
               for n, v in model.torch_params().items())


def test_two_adam_steps_equal_the_authors(shared_dir, float64):
    d = np.load(shared_dir / "golden" / "train_step_small.npz")
    paper = load_config(ROOT / "configs" / "zsm_vimeo.yaml")["train"]
    assert paper["charbonnier_eps"] ** 2 == pytest.approx(float(d["charbonnier_eps"]))
    assert (paper["beta_1"], paper["beta_2"], paper["epsilon"]) == (
        float(d["beta1"]), float(d["beta2"]), float(d["adam_eps"]))
    lr = float(d["lr"])  # the golden steps use a constant lr (the schedule's is 1e-10 off)
    model = ZoomingSlowMo(nf=int(d["nf"]), groups=int(d["groups"]), front_rbs=int(d["front_rbs"]),
                          back_rbs=int(d["back_rbs"]), deform_impl="gather", dtype="float64")
    load_official_state_dict(model, _state(d, "sd_before"))
    before = {n: v.numpy().copy() for n, v in model.torch_params().items()}
    opt = make_adam(paper["optimizer"], lr, paper["beta_1"], paper["beta_2"], paper["epsilon"])
    assert isinstance(opt, TorchAdam) and opt.learning_rate.dtype == "float64"
    x = np.transpose(d["input"], (0, 1, 3, 4, 2))
    y = np.transpose(d["target"], (0, 1, 3, 4, 2))
    batch = x.shape[0]
    tol = 1e-4 * lr  # measured: 9e-10 after step 1, 1.0e-8 after step 2
    grads1 = None
    for step in (1, 2):
        with tf.GradientTape() as tape:
            loss = replica_loss(y, model(x, training=True), batch, paper["charbonnier_eps"],
                                paper["loss_reduction"])
        assert loss.dtype == tf.float64
        grads = tape.gradient(loss, model.trainable_variables)
        grads1 = grads1 or dict(zip([v.path for v in model.trainable_variables], grads))
        # measured: 6.5e-11 relative at step 1; 8.5e-8 at step 2 (from weights 1e-9 apart)
        rel = 1e-9 if step == 1 else 3e-7
        assert float(loss) == pytest.approx(float(d[f"loss_step{step}"]), rel=rel)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        err = _max_err(model, _state(d, f"sd_after{step}"))
        assert err < tol, f"step {step}: weights differ from the authors' by {err:.3g}"

    # the check has teeth: Keras's own Adam (eps added before the bias correction) on the same
    # gradients misses the authors' step-1 weights by ~1e-4, a third of a step
    b1, b2, eps = paper["beta_1"], paper["beta_2"], paper["epsilon"]
    after1 = _state(d, "sd_after1")
    worst = 0.0
    for n, v in model.torch_params().items():
        g = grads1[v.path].numpy()
        keras_step1 = before[n] - lr * np.sqrt(1 - b2) / (1 - b1) * (1 - b1) * g / (
            np.sqrt(1 - b2) * np.abs(g) + eps)
        worst = max(worst, float(np.abs(keras_step1 - torch_to_keras(n, after1[n], v.shape)).max()))
    assert worst > 1e-5, worst


def test_torch_adam_serialises_and_rejects_amsgrad():
    opt = TorchAdam(learning_rate=1e-3)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(clone, TorchAdam) and clone.get_config() == opt.get_config()
    with pytest.raises(ValueError, match="amsgrad"):
        TorchAdam(amsgrad=True)
    with pytest.raises(ValueError, match="train.optimizer"):
        make_adam("sgd", 1e-3)
