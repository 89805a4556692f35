"""Training (issue 4): loss, schedule, overfitting, 2-replica mirrored, multi-worker on
loopback, kill -9 then resume. Tiny model and patches (configs/smoke.yaml)."""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from zsm_tf.training import CosineAnnealingRestarts, charbonnier, load_config
from zsm_tf.training.config import DEFAULTS
from zsm_tf.training.summary import read_scalars

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _train(args, timeout=240, env=None, **kw):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                          env=env or ENV, capture_output=True, text=True, timeout=timeout, **kw)


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_charbonnier_and_schedule():
    x = tf.zeros([2, 3, 4, 4, 3])
    assert abs(float(charbonnier(x, x)) - 1e-3) < 1e-9
    assert abs(float(charbonnier(x, x + 0.5)) - math.sqrt(0.25 + 1e-6)) < 1e-6
    s = CosineAnnealingRestarts(4e-4, [10, 10], [1.0, 0.5], eta_min=1e-7)
    assert s.value(0) == pytest.approx(4e-4)
    assert s.value(5) == pytest.approx(1e-7 + (4e-4 - 1e-7) / 2)
    assert s.value(10) == pytest.approx(2e-4)  # restart at the weight
    assert s.value(25) == pytest.approx(1e-7)  # past the last period
    for step in (0, 3, 9, 10, 17, 25):
        assert float(s(step)) == pytest.approx(s.value(step), rel=1e-5)
    # linear warm-up: 1/4, 2/4, 3/4 of the cosine rate, then the cosine alone
    w = CosineAnnealingRestarts(4e-4, [10], eta_min=0.0, warmup=4)
    assert w.value(0) == pytest.approx(1e-4) and w.value(2) == pytest.approx(3e-4 * (
        0.5 * (1 + math.cos(math.pi * 0.2))))
    assert w.value(5) == pytest.approx(2e-4)
    for step in (0, 1, 3, 4, 9):
        assert float(w(step)) == pytest.approx(w.value(step), rel=1e-5)
    assert CosineAnnealingRestarts.from_config(w.get_config()).warmup == 4
    paper = load_config(ROOT / "configs" / "zsm_vimeo.yaml")
    assert paper["train"]["periods"] == [150000] * 4 and paper["train"]["global_batch"] == 16
    assert paper["data"]["lr_patch"] == 32 and paper["model"]["back_rbs"] == 40
    # the file itself, not merged over the defaults (which would make this always true)
    assert yaml.safe_load((ROOT / "configs" / "default.yaml").read_text()) == DEFAULTS
    assert (paper["train"]["optimizer"], paper["train"]["loss_reduction"]) == ("torch_adam", "sum")
    with pytest.raises(ValueError, match="loss_reduction"):
        load_config(overrides={"train": {"loss_reduction": "median"}})
    # the authors' reduction: the sum over every value, the mean's count times the mean
    y = tf.random.uniform([2, 3, 4, 4, 3], seed=1)
    assert float(charbonnier(x, y, reduction="sum")) == pytest.approx(
        float(charbonnier(x, y)) * 2 * 3 * 4 * 4 * 3, rel=1e-5)


def test_new_frame_weight_weighs_the_interpolated_frames():
    """train.new_frame_weight: the interpolated frames' (odd indices) Charbonnier values count
    that many times the input frames', the weights' mean stays 1 (weight 1: the plain loss)."""
    from zsm_tf.recipe import new_frame_weights

    w = new_frame_weights(7, 3.0).numpy()
    assert w.mean() == pytest.approx(1.0) and w[1] == pytest.approx(3 * w[0])
    assert list(w[::2]) == [w[0]] * 4 and list(w[1::2]) == [w[1]] * 3
    x = tf.zeros([2, 7, 4, 4, 3])
    y = tf.concat([tf.fill([2, 1, 4, 4, 3], 0.5 * (t % 2)) for t in range(7)], axis=1)
    per_frame = np.array([math.sqrt((0.5 * (t % 2)) ** 2 + 1e-6) for t in range(7)])
    assert float(charbonnier(x, y, frame_weights=w)) == pytest.approx(
        float(np.mean(per_frame * w)), rel=1e-5)
    assert float(charbonnier(x, y, frame_weights=new_frame_weights(7, 1.0))) == pytest.approx(
        float(charbonnier(x, y)), rel=1e-6)
    assert float(charbonnier(x, y, reduction="sum", frame_weights=w)) == pytest.approx(
        float(np.sum(per_frame * w)) * 2 * 4 * 4 * 3, rel=1e-5)
    for bad in (0, -1.0, "3", True):
        with pytest.raises(ValueError, match="new_frame_weight"):
            load_config(overrides={"train": {"new_frame_weight": bad}})
    assert load_config(ROOT / "configs" / "motion_newframes.yaml")["train"]["new_frame_weight"] == 3


def test_loss_falls_on_a_tiny_fixed_set(tmp_path):
    from zsm_tf.training.trainer import Trainer

    cfg = load_config(SMOKE, {"data": {"source": "synthetic:2", "augment": None,
                                       "val_clips": 0},
                              "train": {"steps": 30, "lr": 3e-3, "checkpoint_every": 0,
                                        "print_every": 10, "new_frame_weight": 2.0}})
    result = Trainer(cfg, output_dir=tmp_path / "run", verbose=False).fit()
    losses = result["losses"]
    assert len(losses) == 30 and all(map(math.isfinite, losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.7 * first, (first, last)
    assert (tmp_path / "run" / "final.weights.h5").is_file()


def test_mirrored_two_cpu_replicas_matches_one_device(tmp_path):
    from zsm_tf import ZoomingSlowMo
    from zsm_tf.training.trainer import Trainer

    init = tmp_path / "init.weights.h5"
    ZoomingSlowMo(**load_config(SMOKE)["model"]).save_weights(init)
    out = _ok(_train(["--config", str(SMOKE), "--strategy", "mirrored", "--cpu-replicas", "2",
                      "--steps", "2", "--init-weights", str(init), "--val-clips", "1",
                      "--output-dir", str(tmp_path / "mirrored")]))
    assert "MirroredStrategy: 2 replica(s)" in out
    run = tmp_path / "mirrored"
    for name in ("model_config.json", "final.weights.h5", "checkpoints/checkpoint", "logs"):
        assert (run / name).exists(), name
    # the record: the architecture and the window of the training clips (smoke: 7 HR frames)
    from zsm_tf.run_dir import RunDir, window_of_clip

    record = RunDir(run).read_record()
    assert record.settings.window == window_of_clip(load_config(SMOKE)["data"]["frames"]) == 4
    assert record.architecture["nf"] == load_config(SMOKE)["model"]["nf"]
    assert "validation PSNR" in out
    val = read_scalars(run / "logs" / "validation")
    assert [s for s, _ in val["psnr"]] == [0, 2] and val["psnr_bicubic"][0][1] > 15
    assert [s for s, _ in read_scalars(run / "logs" / "train")["loss"]] == [1, 2]
    # the same 2 steps on one device from the same weights and data give the same weights:
    # the replicas' gradients are summed once (not averaged twice, not dropped)
    cfg = load_config(SMOKE, {"train": {"steps": 2, "checkpoint_every": 0,
                                        "init_weights": str(init)},
                              "data": {"val_clips": 0}})
    trainer = Trainer(cfg, output_dir=tmp_path / "single", verbose=False)
    trainer.fit()
    model = ZoomingSlowMo.from_config(json.loads((run / "model_config.json").read_text()))
    model.load_weights(run / "final.weights.h5")
    start = ZoomingSlowMo.from_config(model.get_config())
    start.load_weights(init)
    moved = 0
    for a, b, c in zip(model.weights, trainer.model.weights, start.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=2e-6, err_msg=a.path)
        moved += not np.allclose(a.numpy(), c.numpy())
    assert moved > len(model.weights) // 2  # training did change the weights


def test_multi_worker_on_loopback(tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster,
                                               "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), "--config", str(SMOKE), "--strategy",
             "multi_worker", "--steps", "2", "--output-dir", str(tmp_path / "mw")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-4000:]
    assert "2 replica(s) on 2 workers" in outs[0]
    sums = [float(o.split("weights checksum ")[1].split()[0]) for o in outs]
    assert sums[0] == pytest.approx(sums[1], rel=1e-6)  # the workers stayed in sync
    assert "finished at step 2" in outs[1]
    run = tmp_path / "mw"
    assert (run / "final.weights.h5").is_file() and (run / "model_config.json").is_file()
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-2")


def test_kill9_then_resume(tmp_path):
    cfg = load_config(SMOKE)
    cfg["train"].update(periods=[4, 4, 4], restart_weights=[1, 0.5, 1])
    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out_dir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(config), "--steps", "12",
           "--checkpoint-every", "2", "--output-dir", str(out_dir)]
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    state = out_dir / "checkpoints" / "checkpoint"
    deadline = time.time() + 200
    try:
        while time.time() < deadline and first.poll() is None:
            if state.exists() and "ckpt-" in state.read_text():
                break
            time.sleep(0.05)
        assert first.poll() is None, "first run ended before it could be killed"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    assert first.returncode == -signal.SIGKILL
    killed_at = int(tf.train.latest_checkpoint(str(out_dir / "checkpoints")).rsplit("-", 1)[1])
    assert 2 <= killed_at < 12

    out = _ok(subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True,
                             timeout=240))
    assert (f"Resuming from {out_dir / 'checkpoints' / f'ckpt-{killed_at}'}: step {killed_at}, "
            f"{2 * killed_at} samples seen, optimizer iterations {killed_at}") in out
    assert f"Training steps {killed_at + 1}..12" in out
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(out_dir / "checkpoints")))
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 12
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 12
    assert reader.get_tensor("samples_seen/.ATTRIBUTES/VARIABLE_VALUE") == 24
    # the resumed run logged every later step with the schedule continued (restarts included)
    sched = CosineAnnealingRestarts(cfg["train"]["lr"], [4] * 3, [1, 0.5, 1],
                                    cfg["train"]["eta_min"])
    scalars = read_scalars(out_dir / "logs" / "train")
    lrs = dict(scalars["lr"])
    assert "loss" in scalars and sorted(lrs)[-1] == 12
    for step in range(killed_at + 1, 13):
        assert lrs[step] == pytest.approx(sched.value(step - 1), rel=1e-5), step
    # same data and weights after the restore: the first resumed step repeats the killed
    # run's loss for that step, if that run got to print it
    line = f"step {killed_at + 1}/12  loss "
    before = (tmp_path / "first.log").read_text()
    if line in before:
        again = float(out.split(line)[1].split()[0])
        assert again == pytest.approx(float(before.split(line)[1].split()[0]), rel=1e-3)


def test_checkpoint_restores_into_a_fresh_model(tmp_path):
    """``tf.train.Checkpoint(model=model)`` alone restores every weight of a training
    checkpoint (the contract other tools rely on)."""
    from zsm_tf import ZoomingSlowMo

    cfg = dict(nf=8, groups=1, front_rbs=1, back_rbs=1)
    model = ZoomingSlowMo(**cfg)
    opt = __import__("keras").optimizers.Adam()
    opt.build(model.trainable_variables)
    path = tf.train.Checkpoint(model=model, optimizer=opt).save(str(tmp_path / "ckpt"))
    fresh = ZoomingSlowMo(**cfg)
    tf.train.Checkpoint(model=fresh).restore(path).expect_partial()
    for a, b in zip(model.weights, fresh.weights):
        assert np.array_equal(a.numpy(), b.numpy()), a.path
