"""One-line errors, exit status 2, no traceback and no TensorFlow start-up lines (banner,
``cudart_stub``, ``cuInit``) for train.py and ``zsm-tf convert-weights``; convert-weights never
replaces a ``model_config.json`` that describes another model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "golden" / "zsm_small.npz"
needs_golden = pytest.mark.skipif(not GOLDEN.is_file(), reason="needs ../shared/golden")
ENV = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ZSM_TF_DEBUG")}


def run(*argv, timeout=300):
    res = subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout, env=ENV)
    return res.returncode, res.stderr


def one_line(err, prefix):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    return lines[0]


@pytest.mark.parametrize("case, words", [
    ("missing", "no such file"),
    ("malformed", "not valid YAML (line 2"),
    ("unknown-section", "unknown config sections: ['modell']"),
    ("unknown-model-key", "unknown model option nff"),
    ("empty-data", "no usable video under"),
])
def test_train_setup_errors_one_line(tmp_path, case, words):
    args = ["--output-dir", tmp_path / "run", "--steps", "1"]
    if case == "missing":
        args += ["--config", tmp_path / "nope.yaml"]
    elif case == "malformed":
        (tmp_path / "c.yaml").write_text("model: {nf: 8\n  bad: [\n")
        args += ["--config", tmp_path / "c.yaml"]
    elif case == "unknown-section":
        (tmp_path / "c.yaml").write_text("modell: {nf: 8}\n")
        args += ["--config", tmp_path / "c.yaml"]
    elif case == "unknown-model-key":
        args += ["--model", "nff=8"]
    else:
        (tmp_path / "videos").mkdir()
        args += ["--data", f"videos:{tmp_path / 'videos'}"]
    rc, err = run("train.py", *args)
    line = one_line(err, "train.py: error:")
    assert rc == 2 and words in line, err
    assert not (tmp_path / "run" / "checkpoints").exists()


@needs_golden
def test_convert_truncated_file_one_line(tmp_path):
    cut = tmp_path / "cut.npz"
    cut.write_bytes(GOLDEN.read_bytes()[: GOLDEN.stat().st_size // 2])
    rc, err = run("-m", "zsm_tf.cli", "convert-weights", cut, tmp_path / "w.weights.h5")
    line = one_line(err, "zsm-tf convert-weights: error:")
    assert rc == 2 and "truncated" in line and str(cut) in line, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.npz"]


@needs_golden
def test_convert_never_replaces_another_models_config(tmp_path, capsys):
    from zsm_tf.commands.convert import main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other = {"nf": 8, "groups": 1, "front_rbs": 1, "back_rbs": 1}
    (run_dir / "model_config.json").write_text(json.dumps(other))
    rc = main([str(GOLDEN), str(run_dir / "x.weights.h5")])
    err = capsys.readouterr().err
    line = one_line(err, "zsm-tf convert-weights: error:")
    assert rc == 2 and "describes another model" in line and "nf=8" in line
    assert json.loads((run_dir / "model_config.json").read_text()) == other
    assert sorted(p.name for p in run_dir.iterdir()) == ["model_config.json"]
    # the same model's config is fine (converting twice into one folder)
    out = tmp_path / "conv"
    assert main([str(GOLDEN), str(out / "a.weights.h5")]) == 0
    assert main([str(GOLDEN), str(out / "b.weights.h5")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.weights.h5", "b.weights.h5", "model_config.json"]
