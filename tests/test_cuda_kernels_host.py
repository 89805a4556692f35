"""The CUDA kernels of custom_ops/deform_im2col_gpu.cu.cc, compiled as host code by g++ through
custom_ops/host_shim/cuda_runtime.h (each launch runs its grid's threads serially), against the
CPU kernels: the standalone GPU test custom_ops/cuda_test/test_gpu_vs_cpu.cu, unchanged, built
with g++ instead of nvcc. No GPU, no nvcc, no TensorFlow needed.

It checks forward, input / offset / mask gradients, float and double, over batch > 1, several
deformable groups, asymmetric stride / padding / dilation, zero, integer, half-integer and
far-outside offsets and empty tensors; every output NaN-filled first; a second run on a 3-block
grid (so the grid-stride loops loop) must give bit-identical columns and offset / mask gradients.
With AddressSanitizer when g++ has it, so an out-of-bounds index also fails.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

OPS = Path(__file__).resolve().parents[1] / "custom_ops"
SOURCES = [str(OPS / "cuda_test" / "test_gpu_vs_cpu.cu"), str(OPS / "deform_im2col_gpu.cu.cc")]
BASE = ["-std=c++17", "-O1", "-x", "c++", f"-I{OPS / 'host_shim'}", f"-I{OPS}"]
SANITIZE = ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
LINE = re.compile(r"^(ok  |FAIL) (float|double)\s+(\S+) .*columns (\S+) grad_input (\S+) "
                  r"grad_offsets (\S+) grad_mask (\S+) repeat (\w+)$")
REQUIRED_CASES = {"golden-modulated", "strided-dilated", "asymmetric-a", "asymmetric-b",
                  "zero-offsets", "integer-offsets", "half-integer", "far-outside", "very-far",
                  "empty-batch", "empty-channels", "empty-output", "empty-input"}

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")


def _compile(out, *extra):
    return subprocess.run(["g++", *BASE, *extra, *SOURCES, "-o", str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def host_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("shim") / "test_gpu_vs_cpu"
    built = _compile(out, *SANITIZE)
    sanitized = built.returncode == 0
    if not sanitized:  # g++ without libasan/libubsan: the same test, unsanitized
        built = _compile(out)
    assert built.returncode == 0, built.stdout[-3000:]
    run = subprocess.run([str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=300)
    return run, sanitized


def test_kernels_match_cpu_on_host(host_run):
    run, _ = host_run
    assert run.returncode == 0, run.stdout[-3000:]
    rows = [LINE.match(line) for line in run.stdout.splitlines()]
    rows = [m.groups() for m in rows if m]
    assert rows, run.stdout
    names = {r[2] for r in rows}
    assert REQUIRED_CASES <= names, REQUIRED_CASES - names
    for name in names:
        assert {r[1] for r in rows if r[2] == name} == {"float", "double"}, name
    assert f"all {len(names)} cases match" in run.stdout
    for status, dtype, name, *errs, repeat in rows:
        assert status == "ok  " and repeat == "identical", (dtype, name)
        # serial host code: the summation order is the CPU kernels' except for the mask factor
        assert max(map(float, errs)) <= (1e-6 if dtype == "float" else 1e-14), (dtype, name, errs)


def test_unrun_kernels_fail(tmp_path):
    """Kernels that never run leave NaN in the outputs: the test must fail, not pass."""
    out = tmp_path / "nothing"
    built = _compile(out, "-DZSM_LAUNCH(kernel,blocks,threads,stream)=::zsm_shim::launch_nothing")
    assert built.returncode == 0, built.stdout[-3000:]
    run = subprocess.run([str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=120)
    assert run.returncode == 1
    assert "MISMATCH" in run.stdout
    fails = {m.group(3) for m in map(LINE.match, run.stdout.splitlines()) if m and
             m.group(1) == "FAIL"}
    # every case with a non-empty output fails; the all-empty ones have nothing to write
    assert {"golden-modulated", "zero-offsets", "empty-input", "empty-channels"} <= fails
