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
