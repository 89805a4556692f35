"""The record of a trained model (zsm_tf/run_dir.py): it round-trips, loading hands it to the model,
the upscaler takes its defaults from it, and the library's defaults are the command line's."""
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zsm_tf.run_dir import (
    DEFAULT_WINDOW,
    InferenceSettings,
    ModelRecord,
    RunDir,
    settings_of,
    window_of_clip,
)

ROOT = Path(__file__).resolve().parents[1]
SIZE = dict(nf=8, groups=1, front_rbs=1, back_rbs=1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A weights folder: tiny.weights.h5 and a record with window 3 and a bf16 cost."""
    from zsm_tf import ZoomingSlowMo

    d = tmp_path_factory.mktemp("run")
    m = ZoomingSlowMo(**SIZE)
    m.save_weights(str(d / "tiny.weights.h5"))
    RunDir(d).write_record(ModelRecord(m.get_config(), InferenceSettings(window=3,
                                                                         bf16_psnr_cost_db=0.01)))
    return d


def test_record_round_trips(tmp_path):
    arch = {"name": "zooming_slow_mo", "nf": 8, "groups": 1, "front_rbs": 1, "back_rbs": 1,
            "residual": "motion"}
    rec = ModelRecord(arch, InferenceSettings(window=4, bf16_psnr_cost_db=0.007))
    run = RunDir(tmp_path / "run")
    run.write_record(rec)
    assert run.has_record() and run.config_path.name == "model_config.json"
    back = run.read_record()
    assert back == rec and back.architecture == arch
    # one flat JSON object: the architecture, the settings beside it
    assert json.loads(run.config_path.read_text()) == {**arch, "window": 4, "bf16_psnr_cost_db": 0.007}
    # measured settings are added without touching the architecture; unknown keys are not settings
    again = run.record_settings(bf16_psnr_cost_db=0.02)
    assert again.architecture == arch and again.settings == InferenceSettings(4, 0.02)
    assert run.read_record() == again
    # a record without settings: empty ones, the default window
    ModelRecord(arch).write(tmp_path / "bare.json")
    bare = ModelRecord.read(tmp_path / "bare.json")
    assert bare.settings == InferenceSettings() and bare.settings.default_window == DEFAULT_WINDOW
    assert [p.name for p in run.path.iterdir()] == ["model_config.json"]   # no temp file left
    assert (run.checkpoints.name, run.final_weights.name, run.logs("train").parts[-2:]) == \
        ("checkpoints", "final.weights.h5", ("logs", "train"))
    assert window_of_clip(7) == 4 and window_of_clip(3) == 2
    assert ModelRecord(arch).same_architecture(ModelRecord({**arch, "name": "other_2"}))
    assert not ModelRecord(arch).same_architecture(ModelRecord({**arch, "nf": 16}))


def test_loading_hands_the_record_to_the_upscaler(tiny_run):
    from zsm_tf import ZoomingSlowMo
    from zsm_tf.inference import SpaceTimeUpscaler, UpscaleSettingError
    from zsm_tf.loading import load_model

    model = load_model(tiny_run / "tiny.weights.h5")
    assert settings_of(model) == InferenceSettings(window=3, bf16_psnr_cost_db=0.01)
    up = SpaceTimeUpscaler(model)
    assert up.window == 3 and up.tile == "auto" and up.overlap == 16
    assert up.precision in ("float32", "bfloat16")
    assert SpaceTimeUpscaler(model, window=5).window == 5
    # a model built in code (or a plain callable) has no record: the default window
    fresh = ZoomingSlowMo(**SIZE)
    assert settings_of(fresh) == InferenceSettings()
    assert SpaceTimeUpscaler(fresh).window == DEFAULT_WINDOW
    assert SpaceTimeUpscaler(lambda x: x).window == DEFAULT_WINDOW
    # one validation, typed: the argument's name, no command-line flag
    for kwargs, name in [({"window": 1}, "window"), ({"tile": 18}, "tile"),
                         ({"tile": 32, "overlap": 6}, "overlap"), ({"tile": 32, "overlap": 32}, "overlap"),
                         ({"batch": 0}, "batch")]:
        with pytest.raises(UpscaleSettingError) as e:
            SpaceTimeUpscaler(fresh, **kwargs)
        assert e.value.name == name and str(e.value).startswith(name + " ") and "--" not in str(e.value)


def test_library_defaults_are_the_command_lines(tiny_run):
    """``SpaceTimeUpscaler(model)`` == what ``zsm-tf upscale IN OUT --weights W`` builds."""
    from zsm_tf.commands import upscale
    from zsm_tf.commands.common import build_upscaler, check_model_args
    from zsm_tf.inference import SpaceTimeUpscaler
    from zsm_tf.loading import load_model

    weights = str(tiny_run / "tiny.weights.h5")
    args = upscale.build_parser().parse_args(["in.mp4", "out.mp4", "--weights", weights])
    check_model_args(args)
    model = load_model(weights)
    cli = build_upscaler(args, model)
    lib = SpaceTimeUpscaler(model)
    keys = ("window", "tile", "overlap", "precision", "batch", "flips", "max_memory", "pipeline")
    assert {k: getattr(cli, k) for k in keys} == {k: getattr(lib, k) for k in keys}
    assert cli.window == 3   # from the record, not a constant
    # the parser's own defaults are the signature's where it has one
    sig = inspect.signature(SpaceTimeUpscaler).parameters
    assert args.precision == sig["precision"].default and args.batch == sig["batch"].default
    assert args.self_ensemble == sig["self_ensemble"].default
    # a bad option is said with the option's name
    for argv, flag in [(["--window", "1"], "--window"), (["--tile", "18"], "--tile"),
                       (["--tile", "32", "--tile-overlap", "6"], "--tile-overlap"),
                       (["--batch", "0"], "--batch")]:
        bad = upscale.build_parser().parse_args(["in.mp4", "out.mp4", *argv])
        with pytest.raises(ValueError, match=f"^{flag} must"):
            check_model_args(bad)
    with pytest.raises(ValueError, match="^--max-memory cannot read memory size 'lots'"):
        build_upscaler(upscale.build_parser().parse_args(["i", "o", "--max-memory", "lots"]), model)
    import zsm_tf

    assert zsm_tf.SpaceTimeUpscaler is SpaceTimeUpscaler   # what a library user calls


def test_measure_bf16_cost_and_ship(tiny_run, tmp_path):
    """The ship step writes the record by code: window from training, the bf16 cost measured."""
    from zsm_tf.loading import load_model
    from zsm_tf.precision import measure_bf16_cost

    model = load_model(tiny_run / "tiny.weights.h5")
    rng = np.random.default_rng(0)
    clip = [rng.integers(0, 256, (32, 32, 3)).astype(np.uint8) for _ in range(5)]
    cost = measure_bf16_cost(model, [clip], window=3)
    assert isinstance(cost, float) and 0 <= cost < 5
    dest = tmp_path / "shipped"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "ship_weights.py"),
                           str(tiny_run / "tiny.weights.h5"), "--name", "t", "--bf16-cost", "0.02",
                           "--dest", str(dest)], capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                               "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = RunDir(dest).read_record()
    assert rec.settings == InferenceSettings(window=3, bf16_psnr_cost_db=0.02)
    assert rec.architecture["nf"] == 8 and rec.architecture["deform_impl"] == "auto"
    assert sorted(p.name for p in dest.iterdir()) == ["model_config.json", "t.weights.h5",
                                                      "training.json"]
    history = json.loads((dest / "training.json").read_text())
    assert history["run"] == str(tiny_run / "tiny.weights.h5") and history["config"] is None
