"""Signs of life: export.py says what it does and hides TensorFlow's C++ start-up log like the
other commands; long silent phases (start-up, tracing) get a "still working" line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from test_upscale import tiny_model

from zsm_tf.commands.progress import heartbeat

ROOT = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ZSM_TF_DEBUG")}


def test_heartbeat_speaks_only_when_silent(capsys):
    with heartbeat("prog", "tracing", every=0.3):
        time.sleep(1.0)
    err = capsys.readouterr().err
    assert err.count("prog: still tracing (0:00)") >= 2, err
    with heartbeat("prog", "tracing", every=0.5):
        for _ in range(8):
            print("step", flush=True)
            time.sleep(0.1)
    assert "still" not in capsys.readouterr().err


def test_train_heartbeat_says_training_once_steps_run(capsys):
    """train.py's sign of life names the phase: building/tracing until the first step ends,
    then training (it said "tracing" between progress lines of a long run)."""
    from zsm_tf.commands.train import _Phase

    phase = _Phase()
    cb = phase.callback()
    with heartbeat("train.py", phase, every=0.3):
        time.sleep(0.7)
        cb.on_train_batch_end(0)
        cb.on_train_batch_end(1)
        time.sleep(0.7)
    err = capsys.readouterr().err
    assert "train.py: still working (building, or tracing the training step) (0:00)" in err, err
    assert "train.py: still training (2 steps done in this run)" in err, err
    assert err.index("tracing") < err.index("still training")


def test_export_script_quiet_with_progress(tmp_path):
    m = tiny_model()
    m.save_weights(str(tmp_path / "tiny.weights.h5"))
    (tmp_path / "model_config.json").write_text(json.dumps(m.get_config()))
    res = subprocess.run([sys.executable, "export.py", "--weights", str(tmp_path / "tiny.weights.h5"),
                          "--output-dir", str(tmp_path / "exp"), "--no-check", "--warmup-shapes", "none"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("export.py: loading") and "tracing the two signatures" in lines[1], res.stderr
    for noise in ("cuInit", "cpu_feature_guard", "cudart_stub", "absl::InitializeLog", "I0000", "E0000"):
        assert noise not in res.stderr, res.stderr
    assert (tmp_path / "exp" / "1" / "saved_model.pb").is_file()


def test_rate_and_eta_leave_out_the_tracing(capsys):
    """The bar's rate after the first window is that of the windows, not of the tracing: the
    upscaler reports its tracing time (``exclude``) and the bar takes it out of the elapsed time."""
    import numpy as np

    from zsm_tf.commands.progress import BarProgress
    from zsm_tf.inference import SpaceTimeUpscaler
    from zsm_tf.progress import Progress, StatusOnly

    bar = BarProgress("prog")
    bar.start(20, desc="upscale")
    bar._bar.start_t -= 10.0            # 10 s have passed, 8 of them tracing
    bar.advance(4)
    bar.exclude(8.0)
    d = bar._bar.format_dict
    assert 1.9 < d["elapsed"] < 2.5, d
    rate = d["n"] / d["elapsed"]
    assert 1.6 < rate < 2.1, d          # 4 frames in ~2 s, not 4 in 10
    bar.exclude(100.0)                  # never more than the elapsed time
    assert 0 <= bar._bar.format_dict["elapsed"] < 0.5
    bar.close()

    class Recorder(Progress):
        excluded = []

        def exclude(self, seconds):
            self.excluded.append(seconds)

    rec = Recorder()
    up = SpaceTimeUpscaler(tiny_model(), window=3, precision="float32")
    clip = [np.full((16, 16, 3), 10 * i, np.uint8) for i in range(5)]
    assert len(list(up.stream(iter(clip), progress=StatusOnly(rec)))) == 9
    assert len(rec.excluded) == 2 and rec.excluded[0] > 0.05   # the first window traced
    assert rec.excluded[1] < rec.excluded[0] / 5               # the second one did not
    assert abs(sum(rec.excluded) - up.predict.trace_seconds) < 1e-9


def test_a_bar_closed_right_after_the_tracing_ends_its_line(monkeypatch):
    """Ctrl-C just after the first window's tracing: the bar's line ends before the error line
    (tqdm thought a bar whose start moved past its last draw had never been drawn)."""
    import io

    from zsm_tf.commands.progress import BarProgress

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = BarProgress("prog")
    bar.start(17, desc="upscale")
    bar.describe("first window (tracing the model)")
    time.sleep(0.2)
    bar.describe("upscale")
    bar.exclude(0.2)
    bar.close()
    print("prog: error: interrupted", file=sys.stderr)
    lines = err.getvalue().replace("\r", "\n").splitlines()
    assert lines[-1] == "prog: error: interrupted", err.getvalue()[-200:]
