"""Packaging and the small shared helpers: pyproject.toml declares the project (version from the
package, a keras floor that TensorFlow accepts, tensorboard), one baseline and one interleave."""
import re
from importlib.metadata import requires
from pathlib import Path

import numpy as np
import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _floor(spec, name):
    m = re.search(rf"^{name}\s*>=\s*([0-9.]+)", spec)
    if not m:
        return None
    parts = [int(x) for x in m.group(1).split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def test_pyproject_is_the_single_source(project):
    import zsm_tf

    assert "version" in project["dynamic"] and "version" not in project
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    assert conf["setuptools"]["dynamic"]["version"] == {"attr": "zsm_tf.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", zsm_tf.__version__)
    setup_py = (ROOT / "setup.py").read_text()
    assert "version" not in setup_py and "install_requires" not in setup_py
    assert "custom_ops_src" in setup_py  # the build hook
    assert not (ROOT / "pytest.ini").exists()
    assert project["scripts"]["zsm-tf"] == "zsm_tf.cli:main"
    assert {"convert", "gpu", "test"} <= set(project["optional-dependencies"])
    # the export writes its warmup file with TF Serving's protos: a dependency, not an extra
    assert any(d.startswith("tensorflow-serving-api") for d in project["dependencies"])


def test_keras_floor_is_tensorflows_and_tensorboard_is_installed(project):
    deps = project["dependencies"]
    ours = next(_floor(d, "keras") for d in deps if d.startswith("keras"))
    tf_needs = next(_floor(r, "keras") for r in requires("tensorflow") if r.startswith("keras"))
    assert ours >= tf_needs, (ours, tf_needs)
    assert any(d.split()[0] == "tensorboard" for d in deps)
    assert "tensorboard --logdir runs/zsm/logs" in (ROOT / "README.md").read_text()


def test_one_line():
    from zsm_tf.errors import one_line

    assert one_line(ValueError("bad value\n  details")) == "bad value"
    assert one_line(KeyError()) == "KeyError"
    assert len(one_line(RuntimeError("x" * 500))) == 300


def test_video_extensions_are_defined_once():
    from zsm_tf.data import video_clips
    from zsm_tf.io import VIDEO_EXTS, VIDEO_INPUT_EXTS

    assert VIDEO_EXTS < VIDEO_INPUT_EXTS and not hasattr(video_clips, "VIDEO_EXTS")


def test_interleave_and_the_one_baseline():
    import tensorflow as tf

    from zsm_tf.baseline import bicubic_blend, interleave
    from zsm_tf.evaluation import baseline_frames
    from zsm_tf.inference import to_uint8

    kept = tf.reshape(tf.range(2 * 3, dtype=tf.float32), [2, 3, 1])
    new = 100 + tf.reshape(tf.range(2 * 2, dtype=tf.float32), [2, 2, 1])
    np.testing.assert_array_equal(interleave(kept, new).numpy()[..., 0],
                                  [[0, 100, 1, 101, 2], [3, 102, 4, 103, 5]])
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, size=(3, 8, 12, 3), dtype=np.uint8)
    base = bicubic_blend(lr[None] / np.float32(255)).numpy()[0]
    up = tf.image.resize(lr / np.float32(255), [32, 48], method="bicubic").numpy()
    np.testing.assert_allclose(base[::2], up, atol=1e-6)
    np.testing.assert_allclose(base[1], (up[0] + up[1]) / 2, atol=1e-6)
    # evaluate's uint8 baseline is the same function, rounded
    frames = list(baseline_frames(list(lr)))
    assert len(frames) == 5
    for got, want in zip(frames, base):
        np.testing.assert_array_equal(got, to_uint8(want))


def _imports(path: Path):
    """The zsm_tf modules a source file imports (at any depth of the file)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zsm_tf"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("zsm_tf"))
    return names


def test_commands_only_call_down():
    """The library never imports a command (docs/architecture.md): only zsm_tf/commands/ and the
    dispatcher zsm_tf/cli.py may import zsm_tf.commands."""
    package = ROOT / "zsm_tf"
    upward = {}
    for path in package.rglob("*.py"):
        rel = path.relative_to(package)
        if rel.parts[0] == "commands" or rel.name == "cli.py":
            continue
        bad = sorted(n for n in _imports(path) if n.startswith("zsm_tf.commands"))
        if bad:
            upward[str(rel)] = bad
    assert upward == {}, upward


def test_layout_of_the_package():
    """The layout issue 16 asks for: commands apart, io one concern per module, one loader."""
    from zsm_tf import loading
    from zsm_tf.commands import COMMANDS

    assert set(COMMANDS) == {"train", "upscale", "evaluate", "export", "convert-weights", "demo"}
    for module, _ in COMMANDS.values():
        assert module.startswith("zsm_tf.commands.") and (ROOT / (module.replace(".", "/") + ".py")).is_file()
    for old in ("video_io", "upscale", "evaluate", "export", "convert", "demo", "segments", "resume",
                "timing", "upscale_job"):
        assert not (ROOT / "zsm_tf" / f"{old}.py").exists(), old
    for path in (ROOT / "zsm_tf" / "io").glob("*.py"):
        assert len(path.read_text().splitlines()) < 300, path   # one concern each
    loaders = [p for p in (ROOT / "zsm_tf").rglob("*.py") if "def load_model(" in p.read_text()]
    assert loaders == [Path(loading.__file__)], loaders


def test_one_record_one_recipe_one_of_each():
    """Issue 21: the run folder's layout is written once (zsm_tf/run_dir.py); the model's compile
    defaults need no import of training (no loop model -> training -> model); one degradation,
    one PSNR, one Vimeo list reader, one validation of the upscaler's settings."""
    package = ROOT / "zsm_tf"
    sources = {p.relative_to(package).as_posix(): p.read_text() for p in package.rglob("*.py")}
    for literal in ('"model_config.json"', '"final.weights.h5"', '"checkpoints"'):
        assert [k for k, v in sources.items() if literal in v] == ["run_dir.py"], literal
    assert not any("def trained_settings(" in v for v in sources.values())
    for rel in ["model.py", *(k for k in sources if k.startswith("recipe/"))]:
        assert not [n for n in _imports(package / rel) if n.startswith("zsm_tf.training")], rel
    assert "zsm_tf.model" not in _imports(package / "training" / "trainer.py")   # the task builds it
    for name, owner in [("def downscale(", "degradation.py"), ("def psnr(", "metrics.py"),
                        ("def read_list(", "data/vimeo.py"), ("def check_settings(", "inference.py"),
                        ("def version_path(", "serving/saved_model.py")]:
        assert [k for k, v in sources.items() if name in v] == [owner], name
    for dead in ("def num_outputs(", "def dump_config(", "def tf_config_for("):
        assert not any(dead in v for v in sources.values()), dead


def test_the_video_jobs_rules_in_one_place():
    """Issue 21.4: one window rule, one identity of a job, one progress interface; resume.py
    only resumes (the loop is pipeline/loop.py); the library's job messages name no option."""
    import ast

    package = ROOT / "zsm_tf"
    sources = {p.relative_to(package).as_posix(): p.read_text() for p in package.rglob("*.py")}
    for name, owner in [("def _due_call(", "inference.py"), ("def window_schedule(", "inference.py"),
                        ("class JobIdentity", "pipeline/job.py"), ("def input_identity(", "pipeline/job.py"),
                        ("class Progress", "progress.py"), ("def produce(", "pipeline/loop.py"),
                        ("class BarProgress", "commands/progress.py")]:
        assert [k for k, v in sources.items() if name in v] == [owner], name
    assert "window_schedule" in sources["pipeline/resume.py"]        # segments derive from it
    for dead in ("def job_record(", "NOT_JOB_FLAGS", "def job_differences(", "class _StatusOnly"):
        assert not any(dead in v for v in sources.values()), dead
    for rel in ("pipeline/video.py", "pipeline/job.py", "pipeline/resume.py", "pipeline/loop.py"):
        tree = ast.parse(sources[rel])
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                      and isinstance(n.body[0], ast.Expr)}
        flags = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                 and id(n) not in docstrings and re.search(r"(^|[\s(])--[a-z]", n.value)]
        assert flags == [], (rel, flags)
