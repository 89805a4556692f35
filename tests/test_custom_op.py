"""The compiled deformable op (custom_ops/) against the golden vectors and the gather path."""
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from zsm_tf.ops import custom_op
from zsm_tf.ops.deform_conv import deform_conv2d, deformable_im2col_gather, resolve_impl

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"


@pytest.fixture(scope="module", autouse=True)
def op():
    if not custom_op.custom_op_available():
        pytest.skip(f"custom op unavailable: {custom_op.unavailable_reason()}")
    return custom_op.load()


def nhwc(a):
    return np.transpose(a, (0, 2, 3, 1))


@pytest.mark.parametrize("name", ["deform_conv_modulated", "deform_conv_strided"])
def test_golden_forward_and_gradients(name):
    path = GOLDEN / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    g = np.load(path)
    x, off = tf.constant(nhwc(g["x"])), tf.constant(nhwc(g["offset"]))
    mask = tf.constant(nhwc(g["mask"])) if "mask" in g else None
    kernel = tf.constant(np.transpose(g["weight"], (2, 3, 1, 0)))
    bias = tf.constant(g["bias"])
    watched = [x, off, kernel, bias] + ([mask] if mask is not None else [])
    with tf.GradientTape() as tape:
        tape.watch(watched)
        out = deform_conv2d(x, off, mask, kernel, bias, strides=int(g["stride"]),
                            padding=int(g["padding"]), dilation=int(g["dilation"]),
                            deformable_groups=int(g["deformable_groups"]), impl="custom_op")
        loss = tf.reduce_sum(out * nhwc(g["grad_output"]))
    grads = tape.gradient(loss, watched)
    np.testing.assert_allclose(out, nhwc(g["output"]), atol=1e-4)
    expected = [nhwc(g["grad_x"]), nhwc(g["grad_offset"]),
                np.transpose(g["grad_weight"], (2, 3, 1, 0)), g["grad_bias"]]
    if mask is not None:
        expected.append(nhwc(g["grad_mask"]))
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, atol=1e-4)


# (B, H, W, C, dg, kernel, strides, padding, dilation, offset scale, modulated)
CASES = [
    (2, 7, 9, 8, 2, (3, 3), 1, 1, 1, 2.0, True),
    (1, 11, 10, 12, 3, (3, 3), 2, 1, 2, 1.5, False),
    (3, 5, 6, 4, 1, (1, 1), 1, 0, 1, 1.0, True),
    (2, 9, 8, 6, 2, (3, 2), (2, 1), (0, 2), (1, 2), 3.0, True),
    (1, 6, 7, 8, 4, (3, 3), 1, 1, 1, 20.0, True),  # mostly far outside the image
    (1, 1, 1, 2, 1, (3, 3), 1, 1, 1, 0.7, True),
    (1, 40, 36, 8, 2, (3, 3), 1, 1, 1, 2.0, True),  # batch < threads: several slabs per image
    # group widths C/dg with their own compiled kernels: 8, 16, 32 (4 above; others generic)
    (2, 6, 5, 16, 2, (3, 3), 1, 1, 1, 2.0, True),
    (1, 5, 4, 32, 2, (3, 3), 1, 1, 1, 2.0, True),
    (1, 4, 5, 32, 1, (3, 3), 2, 1, 1, 2.0, True),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else v


def _random_case(case, dtype=np.float32, seed=0):
    B, H, W, C, dg, (kh, kw), s, p, d, scale, modulated = case
    (sh, sw), (ph, pw), (dh, dw) = _pair(s), _pair(p), _pair(d)
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((B, H, W, C)).astype(dtype))
    off = tf.constant((rng.standard_normal((B, Ho, Wo, 2 * dg * kh * kw)) * scale).astype(dtype))
    mask = tf.constant(rng.random((B, Ho, Wo, dg * kh * kw)).astype(dtype)) if modulated else None
    attrs = dict(kernel_size=(kh, kw), strides=(sh, sw), padding=(ph, pw), dilation=(dh, dw),
                 deformable_groups=dg)
    return x, off, mask, attrs


def _cols_and_grads(fn, x, off, mask, attrs, upstream=None):
    watched = [x, off] + ([mask] if mask is not None else [])
    with tf.GradientTape() as tape:
        tape.watch(watched)
        cols = fn(x, off, mask, **attrs)
        if upstream is None:
            upstream = tf.random.stateless_normal(tf.shape(cols), [1, 2], dtype=cols.dtype)
        loss = tf.reduce_sum(cols * upstream)
    return cols, tape.gradient(loss, watched)


@pytest.mark.parametrize("case", CASES)
def test_matches_gather(case):
    x, off, mask, attrs = _random_case(case)
    cols, grads = _cols_and_grads(custom_op.deformable_im2col, x, off, mask, attrs)
    ref, ref_grads = _cols_and_grads(deformable_im2col_gather, x, off, mask, attrs)
    assert cols.shape == ref.shape
    np.testing.assert_allclose(cols, ref, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_numeric_gradient_float64():
    rng = np.random.default_rng(1)
    B, H, W, C, dg = 1, 4, 5, 4, 2
    x = tf.constant(rng.standard_normal((B, H, W, C)))
    # keep sample positions 0.2 away from integers, where bilinear sampling has kinks
    frac = rng.uniform(0.2, 0.8, (B, H, W, 2 * dg * 9))
    off = tf.constant(rng.integers(-2, 2, frac.shape) + frac)
    mask = tf.constant(rng.random((B, H, W, dg * 9)))

    def f(x, off, mask):
        return custom_op.deformable_im2col(x, off, mask, 3, 1, 1, 1, dg)

    theoretical, numerical = tf.test.compute_gradient(f, [x, off, mask], delta=1e-4)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, atol=1e-6)


def test_unknown_spatial_dims_in_tf_function():
    C, dg = 8, 2
    spec = [tf.TensorSpec([None, None, None, C]), tf.TensorSpec([None, None, None, 2 * dg * 9]),
            tf.TensorSpec([None, None, None, dg * 9])]

    @tf.function(input_signature=spec)
    def f(x, off, mask):
        with tf.GradientTape() as tape:
            tape.watch([x, off, mask])
            cols = custom_op.deformable_im2col(x, off, mask, 3, 1, 1, 1, dg)
            cols_ones = custom_op.deformable_im2col(x, off, None, 3, 1, 1, 1, dg)
            assert cols.shape.as_list() == [None, None, None, 9 * C]
            loss = tf.reduce_sum(cols * cols) + tf.reduce_sum(cols_ones)
        return cols, cols_ones, tape.gradient(loss, [x, off, mask])

    for case in [(2, 5, 7, C, dg, (3, 3), 1, 1, 1, 2.0, True),
                 (1, 8, 3, C, dg, (3, 3), 1, 1, 1, 2.0, True)]:
        x, off, mask, attrs = _random_case(case)
        cols, cols_ones, grads = f(x, off, mask)
        np.testing.assert_allclose(cols, deformable_im2col_gather(x, off, mask, **attrs), atol=1e-5)
        np.testing.assert_allclose(cols_ones, deformable_im2col_gather(x, off, None, **attrs),
                                   atol=1e-5)
        assert [g.shape for g in grads] == [x.shape, off.shape, mask.shape]


def test_float16_inputs_computed_in_float32():
    x, off, mask, attrs = _random_case(CASES[0])
    cols = custom_op.deformable_im2col(tf.cast(x, tf.float16), tf.cast(off, tf.float16),
                                       tf.cast(mask, tf.float16), **attrs)
    assert cols.dtype == tf.float16
    ref = deformable_im2col_gather(x, off, mask, **attrs)
    np.testing.assert_allclose(tf.cast(cols, tf.float32), ref, atol=0.05, rtol=0.01)


def test_bad_offsets_channels_raise():
    x, off, mask, attrs = _random_case(CASES[0])
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        custom_op.deformable_im2col(x, off[..., :-2], mask, **attrs)


def test_auto_resolves_to_custom_op():
    assert resolve_impl("auto") == "custom_op"


def test_disable_env_and_build_failure_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("ZSM_TF_DISABLE_CUSTOM_OP", "1")
    assert not custom_op.custom_op_available()
    assert resolve_impl("auto") == "gather"
    monkeypatch.delenv("ZSM_TF_DISABLE_CUSTOM_OP")
    # a fresh process state with no compiler: one warning, then the gather path
    monkeypatch.setattr(custom_op, "_lib", None)
    monkeypatch.setattr(custom_op, "_tried", False)
    monkeypatch.setattr(custom_op, "_error", None)
    monkeypatch.setenv("ZSM_TF_OP_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-zsm")
    with pytest.warns(RuntimeWarning, match="falling back"):
        assert not custom_op.custom_op_available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        assert not custom_op.custom_op_available()
    assert resolve_impl("auto") == "gather"
    assert "no-such-compiler-zsm" in custom_op.unavailable_reason()


# ---------------------------------------------------------------------------------------------
# Op hygiene, empty tensors, the CUDA toolchain and the honest fallbacks (issues 15, 16)

ROOT = Path(__file__).resolve().parents[1]


def test_op_names_are_namespaced():
    from tensorflow.python.framework import op_def_registry

    from zsm_tf.serving import checks

    assert custom_op.OP_NAME == "ZsmTf>DeformableIm2col"
    assert op_def_registry.get(custom_op.OP_NAME) is not None
    assert op_def_registry.get(custom_op.GRAD_OP_NAME) is not None
    assert op_def_registry.get("DeformableIm2col") is None
    assert checks.CUSTOM_OPS == {custom_op.OP_NAME, custom_op.GRAD_OP_NAME}


def test_build_info_reports_the_loaded_library():
    info = custom_op.build_info()
    assert Path(info["library"]).is_file() and info["error"] is None
    assert "CPU" in info["registered_devices"]
    assert info["cuda"] == ("GPU" in info["registered_devices"])
    assert info["tf_cuda_version"] == custom_op.tf_cuda_version()
    if not info["cuda"]:
        assert info["cuda_skipped"]  # says why there are no CUDA kernels
    meta = Path(info["library"] + ".json")
    assert meta.is_file()


# (B, H, W, C, dg, Ho, Wo): empty batch, no channels, no output pixels, no input pixels
EMPTY = [(0, 5, 6, 8, 2, 5, 6), (2, 5, 6, 0, 1, 5, 6), (2, 4, 5, 4, 2, 0, 0),
         (1, 0, 0, 4, 1, 2, 3)]


@pytest.mark.parametrize("B,H,W,C,dg,Ho,Wo", EMPTY)
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_empty_tensors(B, H, W, C, dg, Ho, Wo, dtype):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((B, H, W, C)), dtype)
    off = tf.constant(rng.standard_normal((B, Ho, Wo, 2 * dg * 9)) * 2, dtype)
    mask = tf.constant(rng.random((B, Ho, Wo, dg * 9)), dtype)
    with tf.GradientTape() as tape:
        tape.watch([x, off, mask])
        cols = custom_op.deformable_im2col(x, off, mask, 3, 1, 1, 1, dg)
        loss = tf.reduce_sum(cols * 3.0) + tf.reduce_sum(off) * 0
    grads = tape.gradient(loss, [x, off, mask])
    assert cols.shape == (B, Ho, Wo, 9 * C)
    assert not np.any(cols.numpy())  # no input pixels or channels: every sample is zero
    assert [g.shape for g in grads] == [x.shape, off.shape, mask.shape]
    for g in grads:
        assert np.all(np.isfinite(g.numpy()))
    assert not np.any(grads[0].numpy()) and not np.any(grads[2].numpy())


def _fake_nvcc(folder: Path, version: str, codes="sm_75 sm_80 sm_86 sm_89 sm_90") -> Path:
    """An executable answering nvcc's version and target queries; it cannot compile."""
    folder.mkdir(parents=True, exist_ok=True)
    arch = codes.replace("sm_", "compute_")
    script = folder / "nvcc"
    script.write_text(f"""#!/bin/sh
case "$1" in
  --version) echo "Cuda compilation tools, release {version}, V{version}.1";;
  --list-gpu-code) echo "{codes}";;
  --list-gpu-arch) echo "{arch}";;
  *) echo "fake nvcc: cannot compile" >&2; exit 1;;
esac
""")
    script.chmod(0o755)
    return script


@pytest.fixture
def cuda_tf():
    if custom_op.tf_cuda_version() is None:
        pytest.skip("TensorFlow is not a CUDA build")
    return int(custom_op.tf_cuda_version().split(".")[0])


def test_nvcc_discovery_takes_the_first_of_tf_major(cuda_tf, monkeypatch, tmp_path):
    other = cuda_tf + 1
    monkeypatch.delenv("NVCC", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.delenv("ZSM_TF_OP_ALLOW_NVCC_MISMATCH", raising=False)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "home"))
    _fake_nvcc(tmp_path / "home" / "bin", f"{other}.0")
    _fake_nvcc(tmp_path / "onpath", f"{cuda_tf}.4")
    pip = _fake_nvcc(tmp_path / "site" / "nvidia" / "cuda_nvcc" / "bin", f"{cuda_tf}.9")
    monkeypatch.setenv("PATH", f"{tmp_path / 'onpath'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site")] + sys.path)
    nvcc, why = custom_op.find_nvcc()
    assert why is None and nvcc.found_in == "PATH" and nvcc.version == (cuda_tf, 4)

    monkeypatch.setenv("PATH", os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if p != str(tmp_path / "onpath")))
    which = shutil.which  # the system's nvcc (if any) is not on PATH either
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "nvcc"
                        else which(name, *a, **k))
    nvcc, why = custom_op.find_nvcc()  # pip's nvidia/cuda_nvcc/bin/nvcc
    assert nvcc.path == str(pip) and nvcc.found_in == "pip" and nvcc.version == (cuda_tf, 9)

    pip.unlink()
    nvcc, why = custom_op.find_nvcc()  # only the other major version (and /usr/local/cuda's)
    if nvcc is None:
        assert f"{other}.0" in why and "does not match" in why
    else:  # a real CUDA toolkit of TensorFlow's major version in /usr/local/cuda
        assert nvcc.found_in == "/usr/local/cuda" and nvcc.version[0] == cuda_tf

    monkeypatch.setenv("NVCC", str(tmp_path / "home" / "bin" / "nvcc"))  # explicit: only that
    nvcc, why = custom_op.find_nvcc()
    assert nvcc is None and "does not match" in why
    monkeypatch.setenv("ZSM_TF_OP_ALLOW_NVCC_MISMATCH", "1")
    assert custom_op.find_nvcc()[0].version == (other, 0)


def test_nvcc_route_plan_targets_and_link(cuda_tf, monkeypatch, tmp_path):
    """ZSM_TF_CUDA_COMPILER=nvcc: the second route; its images go through the same driver-API
    launches as NVRTC's, so the link is the same (no CUDA library)."""
    monkeypatch.setenv("NVCC", str(_fake_nvcc(tmp_path / "a", f"{cuda_tf}.4")))
    monkeypatch.setenv("ZSM_TF_OP_CUDA", "1")
    monkeypatch.setenv("ZSM_TF_CUDA_COMPILER", "nvcc")
    monkeypatch.delenv("ZSM_TF_CUDA_ARCH", raising=False)
    cuda, cpu = custom_op._plans(custom_op.source_dir())
    assert cuda.info["cuda"] and not cpu.info["cuda"] and cuda.name != cpu.name
    assert cuda.info["cuda_compiler"] == "nvcc" and cuda.info["cuda_compiler_version"] == f"{cuda_tf}.4"
    tf_archs = custom_op.tf_cuda_archs()
    supported = [a for a in tf_archs if a not in ("sm_60", "sm_70")]  # the fake has no sm_6x/7x
    assert cuda.info["cuda_archs"] == supported
    assert any(a.startswith("compute_") for a in cuda.info["cuda_archs"])  # PTX for newer GPUs
    if "sm_60" in tf_archs:
        assert "cannot compile sm_60" in cuda.info["cuda_notes"][0]
    link = " ".join(cuda.steps[1][0])
    assert "cuda" not in link.replace("-DZSM_WITH_CUDA", "") and "tensorflow_framework" in link
    assert "-Wl,--no-undefined" in link
    monkeypatch.setenv("ZSM_TF_CUDA_ARCH", "86")
    assert "bad CUDA target" in custom_op._plans(custom_op.source_dir())[0].info["cuda_skipped"]
    monkeypatch.setenv("ZSM_TF_CUDA_COMPILER", "clang")
    assert "ZSM_TF_CUDA_COMPILER" in custom_op._plans(custom_op.source_dir())[0].info["cuda_skipped"]


@pytest.fixture
def fresh_state(monkeypatch):
    """The module's state as in a new process (the library file itself stays loaded)."""
    for name, value in [("_lib", None), ("_tried", False), ("_error", None), ("_info", None),
                        ("_warned", set())]:
        monkeypatch.setattr(custom_op, name, value)


def test_nvcc_mismatch_builds_cpu_only_with_a_warning(cuda_tf, monkeypatch, tmp_path,
                                                      fresh_state):
    monkeypatch.setenv("NVCC", str(_fake_nvcc(tmp_path, f"{cuda_tf + 1}.0")))
    monkeypatch.setenv("ZSM_TF_OP_CUDA", "1")
    monkeypatch.setenv("ZSM_TF_CUDA_COMPILER", "nvcc")
    plans = custom_op._plans(custom_op.source_dir())
    assert len(plans) == 1 and "does not match" in plans[0].info["cuda_skipped"]
    with pytest.warns(RuntimeWarning, match="built CPU-only.*does not match"):
        assert custom_op.custom_op_available()
    info = custom_op.build_info()
    assert not info["cuda"] and Path(info["library"]).is_file()


def test_failed_cuda_build_retries_cpu_only(cuda_tf, monkeypatch, tmp_path, fresh_state):
    monkeypatch.setenv("NVCC", str(_fake_nvcc(tmp_path, f"{cuda_tf}.4")))  # cannot compile
    monkeypatch.setenv("ZSM_TF_OP_CUDA", "1")
    monkeypatch.setenv("ZSM_TF_CUDA_COMPILER", "nvcc")
    with pytest.warns(RuntimeWarning, match="CUDA kernels failed; building it CPU-only") as rec:
        assert custom_op.custom_op_available()
    assert len([w for w in rec if "zsm_tf" in str(w.message)]) == 1
    info = custom_op.build_info()
    assert not info["cuda"] and info["cuda_skipped"].startswith("the CUDA build failed")
    x, off, mask, attrs = _random_case(CASES[0])
    np.testing.assert_allclose(custom_op.deformable_im2col(x, off, mask, **attrs),
                               deformable_im2col_gather(x, off, mask, **attrs), atol=1e-5)


def test_auto_with_gpus_and_no_cuda_kernels_uses_gather_once_warned(monkeypatch, fresh_state):
    if custom_op.has_cuda_kernels():
        pytest.skip("this op library has CUDA kernels")
    monkeypatch.setattr(custom_op, "gpus_visible", lambda: True)
    with pytest.warns(RuntimeWarning, match="no CUDA kernels .*gather path, which runs on the GPU"):
        assert resolve_impl("auto") == "gather"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_impl("auto") == "gather"
        assert resolve_impl("custom_op") == "custom_op"  # asked for explicitly
    monkeypatch.setattr(custom_op, "gpus_visible", lambda: False)
    assert resolve_impl("auto") == "custom_op"


def test_deterministic_impl(monkeypatch, fresh_state):
    from zsm_tf.ops import deform_conv

    assert deform_conv.determinism_enabled() is False
    monkeypatch.setattr(custom_op, "gpus_visible", lambda: False)
    assert deform_conv.deterministic_impl("custom_op") == "custom_op"  # CPU kernels: no atomics
    assert deform_conv.deterministic_impl("auto") == "auto"
    monkeypatch.setattr(custom_op, "gpus_visible", lambda: True)
    with pytest.raises(ValueError, match="not deterministic on GPU"):
        deform_conv.deterministic_impl("custom_op")
    assert deform_conv.deterministic_impl("gather") == "gather"
    with pytest.warns(RuntimeWarning, match="determinism is on"):
        assert deform_conv.deterministic_impl("auto") == "gather"
    monkeypatch.setattr(deform_conv, "determinism_enabled", lambda: True)
    assert resolve_impl("auto") == "gather"  # without the caller asking


def test_layers_do_not_build_the_op_when_constructed(monkeypatch):
    from zsm_tf.layers.deformable_conv import DeformableConv2D
    from zsm_tf.model import ZoomingSlowMo

    def fail():
        raise AssertionError("the op was built or loaded by a constructor")

    monkeypatch.setattr(custom_op, "load", fail)
    layer = DeformableConv2D(8, 8, 2, deform_impl="auto")
    ZoomingSlowMo(nf=8, groups=2, front_rbs=1, back_rbs=1, deform_impl="auto").get_config()
    layer.get_config()
    with pytest.raises(AssertionError, match="constructor"):
        layer.supports_jit  # noqa: B018 - resolved when Keras asks, not before
    monkeypatch.undo()
    assert layer.supports_jit is False  # the compiled op has no XLA kernel
    assert DeformableConv2D(8, 8, 2, deform_impl="gather").supports_jit is True


def test_gather_path_imports_without_posix_modules():
    code = ("import sys; sys.modules['fcntl'] = None\n"  # as on Windows: import fcntl fails
            "import numpy as np\n"
            "from zsm_tf.ops import deform_conv2d, custom_op\n"
            "from zsm_tf.layers.deformable_conv import DeformableConv2D\n"
            "y = deform_conv2d(np.ones((1, 4, 4, 2), 'float32'), np.zeros((1, 4, 4, 18), 'float32'),"
            " None, np.ones((3, 3, 2, 1), 'float32'), padding=1, impl='gather')\n"
            "print(float(y.numpy().sum()))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:]
    assert float(out.stdout.split()[-1]) == 2 * (4 * 4 * 9 - 4 * 4 * 3 + 4)  # padding zeros


def _gpu_op_or_skip():
    if not custom_op.gpus_visible() or not custom_op.has_cuda_kernels():
        pytest.skip("needs a visible GPU and an op library with CUDA kernels")


@pytest.mark.parametrize("case", CASES + [(0, 5, 6, 8, 2, (3, 3), 1, 1, 1, 1.0, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_kernels_match_cpu_kernels(case, dtype):
    """The TF op on /GPU:0 against the same op on /CPU:0 (runs only where a GPU is visible)."""
    _gpu_op_or_skip()
    x, off, mask, attrs = _random_case(case, dtype)
    upstream = tf.random.stateless_normal(
        [x.shape[0], off.shape[1], off.shape[2], attrs["kernel_size"][0] *
         attrs["kernel_size"][1] * x.shape[3]], [1, 2], dtype=x.dtype)
    results = {}
    for device in ("/GPU:0", "/CPU:0"):
        with tf.device(device):
            m = None if mask is None else tf.identity(mask)
            cols, grads = _cols_and_grads(custom_op.deformable_im2col, tf.identity(x),
                                          tf.identity(off), m, attrs, upstream)
        assert device[1:4] in cols.device  # placed where asked (no silent CPU fallback)
        results[device] = [cols] + grads
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for gpu, cpu in zip(results["/GPU:0"], results["/CPU:0"]):
        scale = 1.0 + float(np.abs(cpu.numpy()).max(initial=0.0))
        np.testing.assert_allclose(gpu.numpy(), cpu.numpy(), atol=tol * scale, rtol=0)


def test_gpu_gradient_refuses_under_op_determinism():
    _gpu_op_or_skip()
    code = ("import tensorflow as tf\n"
            "tf.config.experimental.enable_op_determinism()\n"
            "from zsm_tf.ops import custom_op, resolve_impl\n"
            "assert resolve_impl('auto') == 'gather'\n"
            "x = tf.ones([1, 4, 4, 2]); off = tf.zeros([1, 4, 4, 18]); m = tf.ones([1, 4, 4, 9])\n"
            "with tf.device('/GPU:0'), tf.GradientTape() as t:\n"
            "    t.watch(x); y = custom_op.deformable_im2col(x, off, m, 3, 1, 1, 1, 1)\n"
            "try:\n"
            "    t.gradient(y, x); print('NO ERROR')\n"
            "except tf.errors.UnimplementedError as e:\n"
            "    print('REFUSED', 'deterministic' in str(e))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert out.returncode == 0 and "REFUSED True" in out.stdout, out.stdout[-2000:]


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("g++") is None, reason="needs make and g++")
def test_makefile_takes_the_build_flags_from_the_library():
    """One source of build flags: custom_ops/Makefile's compile line is build_flags()' list."""
    from zsm_tf.ops.custom_op import _compiler, build_flags

    cflags, lflags = build_flags(_compiler()[1], "native")
    out = subprocess.run(["make", "-n", "-B", "all", f"PYTHON={sys.executable}"], cwd=ROOT / "custom_ops",
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if "deform_im2col_op.cc" in ln)
    assert " ".join(cflags) in line and line.rstrip().endswith(" ".join(lflags))


def test_build_flags_leave_out_avx512_fp16_that_tensorflows_eigen_cannot_compile():
    """-march=native on an AVX512-FP16 CPU (Sapphire Rapids) turned on Eigen's FP16 packets,
    which do not compile (the op fell back to tf.gather on such machines): every compiler that
    knows the extension is told to leave it out; older ones are not given an unknown flag."""
    from zsm_tf.ops.custom_op import build_flags

    for version, expect in [("g++ (Debian 12.2.0-14+deb12u1) 12.2.0", True),
                            ("g++ (GCC) 13.3.0", True),
                            ("g++ (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0", False),
                            ("Ubuntu clang version 14.0.0-1ubuntu1", True),
                            ("clang version 13.0.1", False)]:
        cflags, _ = build_flags(version, "native")
        assert ("-mno-avx512fp16" in cflags) == expect, version
        if expect:
            assert cflags.index("-mno-avx512fp16") > cflags.index("-march=native")
        assert "-mno-avx512fp16" not in build_flags(version, "")[0]
