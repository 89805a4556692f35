"""The Keras way: ``model.compile()`` (the paper's loss and optimizer) and ``model.fit`` with the
project's callbacks, under ``MirroredStrategy`` over 2 logical CPU replicas.

The logical CPUs must exist before TensorFlow starts, so the training runs in a child process:
this file is also that script (``python tests/test_fit.py OUT``).
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4


def _run(out):
    """Fits a tiny model for STEPS steps on 2 replicas, then the same steps on one device from
    the same weights and data; writes a summary to OUT/result.json."""
    from zsm_tf.training.strategy import make_strategy

    strategy = make_strategy("mirrored", cpu_replicas=2)

    import keras
    import numpy as np
    import tensorflow as tf

    from zsm_tf import ZoomingSlowMo
    from zsm_tf.data import SyntheticClips, fixed_batch
    from zsm_tf.recipe.optimizer import TorchAdam
    from zsm_tf.training.callbacks import CheckpointCallback, TrainingLog, ValidationCallback

    out = Path(out)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})  # fast start
    size = dict(nf=8, groups=1, front_rbs=1, back_rbs=1, deform_impl="auto")
    lr, hr = fixed_batch(SyntheticClips(hr_size=32, frames=3, seed=0, num_clips=2 * STEPS),
                         2 * STEPS, seed=0)
    vlr, vhr = fixed_batch(SyntheticClips(hr_size=32, frames=3, seed=1, num_clips=1), 1, seed=1)

    def data():  # global batch 2: one clip per replica
        return tf.data.Dataset.from_tensor_slices((lr, hr)).batch(2)

    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = ZoomingSlowMo(**size)
        # the paper's loss (Charbonnier summed), Adam with a larger constant rate than the
        # paper's schedule, so that 4 steps move the weights
        model.compile(optimizer=TorchAdam(1e-3))
    init = [w.numpy() for w in model.weights]
    tick = time.perf_counter()
    hist = model.fit(data(), epochs=1, verbose=0, callbacks=[
        TrainingLog(out / "logs" / "train"),
        ValidationCallback(vlr, vhr, out / "logs" / "validation", every=2, verbose=False),
        CheckpointCallback(out / "checkpoints", every=2, verbose=False)])
    fit_s = time.perf_counter() - tick

    single = ZoomingSlowMo(**size)
    single.compile(optimizer=TorchAdam(1e-3))
    single.set_weights(init)
    single.fit(data(), epochs=1, verbose=0)
    diff = max(float(np.abs(a.numpy() - b.numpy()).max())
               for a, b in zip(model.weights, single.weights))
    moved = sum(not np.allclose(a, b.numpy()) for a, b in zip(init, model.weights))
    (out / "result.json").write_text(json.dumps({
        "replicas": strategy.num_replicas_in_sync, "loss": hist.history["loss"],
        "iterations": int(model.optimizer.iterations.numpy()), "max_diff": diff,
        "moved": moved, "weights": len(init), "fit_s": fit_s}))


def test_fit_under_mirrored_strategy_with_the_project_callbacks(tmp_path):
    from zsm_tf.training.summary import read_scalars

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, __file__, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["replicas"] == 2 and res["iterations"] == STEPS
    # the paper's summed loss, finite; training moved most weights
    assert len(res["loss"]) == 1 and 0 < res["loss"][0] < 1e6
    assert res["moved"] > res["weights"] // 2
    # 2 replicas = one device: the replicas' gradients of the summed loss are summed once
    assert res["max_diff"] < 1e-5, res
    # the callbacks' outputs, at global steps
    assert [s for s, _ in read_scalars(tmp_path / "logs" / "train")["loss"]] == [1, 2, 3, 4]
    assert len(read_scalars(tmp_path / "logs" / "train")["lr"]) == STEPS
    val = read_scalars(tmp_path / "logs" / "validation")
    assert [s for s, _ in val["psnr"]] == [0, 2, 4] and val["psnr_bicubic"][0][1] > 15
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.index"))
    assert ckpts == ["ckpt-2.index", "ckpt-4.index"]
    import tensorflow as tf

    from zsm_tf import ZoomingSlowMo

    fresh = ZoomingSlowMo(nf=8, groups=1, front_rbs=1, back_rbs=1)
    tf.train.Checkpoint(model=fresh).restore(
        str(tmp_path / "checkpoints" / "ckpt-4")).expect_partial().assert_existing_objects_matched()


if __name__ == "__main__":
    _run(sys.argv[1])
