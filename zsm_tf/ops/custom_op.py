"""Build, load and wrap the compiled deformable-sampling op of ``custom_ops/``.

The first call of :func:`custom_op_available` (or :func:`load`) compiles the op with the system C++
compiler against the installed TensorFlow (``tf.sysconfig`` flags) into a cache directory, keyed by
a hash of the sources, the TensorFlow version, the compiler and the flags, then loads it with
``tf.load_op_library``. Later processes reuse the cached library. The build goes to a temporary
directory and is renamed into place under a file lock, so concurrent processes never see a partial
library. When the build fails (no compiler, ...), one warning is emitted and ``impl="auto"`` falls
back to the stock-TF gather path.

The CUDA kernels are compiled in only when ``nvcc``, a CUDA build of TensorFlow and a visible GPU
are all present (or ``ZSM_TF_OP_CUDA=1``). The op has no XLA kernel: do not ``jit_compile`` graphs
that use it. A graph or SavedModel containing the op needs :func:`load` called first.

Environment variables:
  ZSM_TF_DISABLE_CUSTOM_OP=1   never build or load the op (``impl="auto"`` -> gather).
  ZSM_TF_OP_CACHE=DIR          cache directory (default ``~/.cache/zsm_tf``, or under
                               ``$XDG_CACHE_HOME``).
  ZSM_TF_OP_CUDA=0|1           force the CUDA kernels off / on.
  ZSM_TF_OP_MARCH=ARCH         ``-march`` value (default ``native``, keyed by the CPU; empty: none).
  ZSM_TF_CUDA_ARCH=ARCH        ``nvcc -arch`` value (default ``native`` with a GPU, else nvcc's).
  CXX, NVCC                    compilers (default ``g++``, ``nvcc`` on PATH or in ``$CUDA_HOME``).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import tensorflow as tf

OP_NAME = "DeformableIm2col"
_SOURCES = ("deform_im2col.h", "deform_im2col_cpu.h", "deform_im2col_gpu.h",
            "deform_im2col_op.cc", "deform_im2col_gpu.cu.cc")
_ATTRS = ("kernel_size", "strides", "padding", "dilation", "deformable_groups")

_lock = threading.Lock()
_lib = None
_tried = False
_error: str | None = None


def _disabled() -> bool:
    return os.environ.get("ZSM_TF_DISABLE_CUSTOM_OP", "").strip().lower() in ("1", "true", "yes")


def source_dir() -> Path | None:
    """``<repo>/custom_ops`` (editable install), or ``zsm_tf/custom_ops_src`` when packaged."""
    here = Path(__file__).resolve()
    for d in (here.parents[2] / "custom_ops", here.parents[1] / "custom_ops_src"):
        if all((d / f).is_file() for f in _SOURCES):
            return d
    return None


def cache_dir() -> Path:
    if os.environ.get("ZSM_TF_OP_CACHE"):
        return Path(os.environ["ZSM_TF_OP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zsm_tf"


def _run(cmd) -> str:
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if out.returncode:
        raise RuntimeError(f"command failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout}")
    return out.stdout


def _find_nvcc() -> str | None:
    if os.environ.get("NVCC"):
        return shutil.which(os.environ["NVCC"])
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    in_home = shutil.which(str(Path(cuda_home) / "bin" / "nvcc")) if cuda_home else None
    return in_home or shutil.which("nvcc") or shutil.which("/usr/local/cuda/bin/nvcc")


def _cuda_lib_dir(nvcc: str) -> Path:
    """The directory of libcudart_static.a (nvcc may be a wrapper script outside CUDA_HOME)."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
             Path(nvcc).resolve().parents[1], "/usr/local/cuda"]
    for home in filter(None, homes):
        for sub in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"):
            if (Path(home) / sub / "libcudart_static.a").is_file():
                return Path(home) / sub
    raise RuntimeError("libcudart_static.a not found; set CUDA_HOME")


def _want_cuda(nvcc: str | None) -> bool:
    flag = os.environ.get("ZSM_TF_OP_CUDA", "").strip()
    if flag in ("0", "1"):
        if flag == "1" and nvcc is None:
            raise RuntimeError("ZSM_TF_OP_CUDA=1 but nvcc was not found")
        return flag == "1"
    return bool(nvcc and tf.test.is_built_with_cuda() and tf.config.list_physical_devices("GPU"))


def _cpu_fingerprint() -> str:
    """The CPU model and flags: a -march=native build is only reused on the same kind of CPU."""
    info = platform.machine() + platform.processor()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info += "".join(sorted({l for l in lines if l.startswith(("model name", "flags"))}))
    except OSError:
        pass
    return info


def _build_plan(src: Path):
    """(library file name, list of build steps); each step is a list of commands run together."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'g++')}) on PATH")
    nvcc = _find_nvcc()
    cuda = _want_cuda(nvcc)
    march = os.environ.get("ZSM_TF_OP_MARCH", "native").strip()
    cxx_version = _run([cxx, "--version"])
    cflags = ["-O3", "-fPIC", "-fopenmp-simd", "-DNDEBUG", "-Wno-deprecated-declarations",
              *tf.sysconfig.get_compile_flags()]
    if "clang" not in cxx_version.lower():
        cflags.append("-Wno-interference-size")  # from Eigen headers with g++ >= 12
    if march:
        cflags.append(f"-march={march}")
    lflags = tf.sysconfig.get_link_flags()

    key = hashlib.sha256()  # not the source path: checkouts with the same sources share a build
    for f in _SOURCES:
        key.update(f.encode() + b"\0" + (src / f).read_bytes())
    key.update(repr((tf.__version__, cflags, lflags, cuda, cxx_version)).encode())
    if march == "native":
        key.update(_cpu_fingerprint().encode())
    cflags.append(f"-I{src}")
    op_cc, gpu_cc = str(src / "deform_im2col_op.cc"), str(src / "deform_im2col_gpu.cu.cc")
    if not cuda:
        name = f"deform_im2col_tf{tf.__version__}_{key.hexdigest()[:16]}.so"
        return name, [[[cxx, *cflags, "-shared", op_cc, "-o", "{out}", *lflags]]]

    arch = os.environ.get("ZSM_TF_CUDA_ARCH")
    if arch is None:
        arch = "native" if tf.config.list_physical_devices("GPU") else ""
    key.update(repr((arch, _run([nvcc, "--version"]))).encode())
    name = f"deform_im2col_tf{tf.__version__}_cuda_{key.hexdigest()[:16]}.so"
    cuda_lib = _cuda_lib_dir(nvcc)
    nvcc_cmd = [nvcc, "-c", "-x", "cu", "-O3", "-std=c++17", "-Xcompiler", "-fPIC", f"-I{src}",
                *([f"-arch={arch}"] if arch else []), gpu_cc, "-o", "{tmp}/gpu.o"]
    cxx_cmd = [cxx, *cflags, "-DZSM_WITH_CUDA", "-c", op_cc, "-o", "{tmp}/op.o"]
    link = [cxx, "-shared", "{tmp}/op.o", "{tmp}/gpu.o", "-o", "{out}", *lflags, f"-L{cuda_lib}",
            "-lcudart_static", "-ldl", "-lrt", "-lpthread"]
    return name, [[nvcc_cmd, cxx_cmd], [link]]


def build(verbose: bool = False) -> Path:
    """Builds the op library into the cache unless it is there already; returns its path."""
    src = source_dir()
    if src is None:
        raise RuntimeError("the custom_ops/ sources were not found beside the zsm_tf package")
    name, steps = _build_plan(src)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    lib = cache / name
    if lib.is_file():
        return lib
    with open(cache / (name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then find the library
        if lib.is_file():
            return lib
        tmp = tempfile.mkdtemp(prefix=".build-", dir=cache)
        try:
            out = os.path.join(tmp, name)
            for step in steps:
                cmds = [[a.format(tmp=tmp, out=out) for a in cmd] for cmd in step]
                if verbose:
                    for cmd in cmds:
                        print(" ".join(cmd))
                procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True) for c in cmds]
                for cmd, p in zip(cmds, procs):
                    log = p.communicate()[0]
                    if p.returncode:
                        (cache / (name + ".log")).write_text(" ".join(cmd) + "\n" + log)
                        raise RuntimeError(f"compiling the op failed, see {cache / (name + '.log')}"
                                           f":\n{log[-2000:]}")
            os.replace(out, lib)  # atomic: readers see no library or a complete one
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return lib


def _register_gradient(lib):
    def grad(op, grad_columns):
        attrs = {a: op.get_attr(a) for a in _ATTRS}
        return lib.deformable_im2col_grad(op.inputs[0], op.inputs[1], op.inputs[2], grad_columns,
                                          **attrs)

    try:
        tf.RegisterGradient(OP_NAME)(grad)
    except KeyError:  # already registered in this process (module reloaded)
        pass


def load():
    """The loaded op module (``tf.load_op_library``), building it first if needed; None when it
    cannot be built or loaded (one warning) or ``ZSM_TF_DISABLE_CUSTOM_OP=1``."""
    global _lib, _tried, _error
    if _disabled():
        return None
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            _tried = True
            try:
                lib = tf.load_op_library(str(build()))
                _register_gradient(lib)
                _lib = lib
            except Exception as e:  # noqa: BLE001 - any failure means: use the gather path
                _error = f"{type(e).__name__}: {e}"
                warnings.warn(f"zsm_tf: the compiled deformable op is unavailable, falling back to "
                              f"impl='gather' ({_error}). Set ZSM_TF_DISABLE_CUSTOM_OP=1 to skip "
                              f"the build.", RuntimeWarning, stacklevel=3)
    return _lib


def custom_op_available() -> bool:
    """True when the compiled op library is loaded (builds and loads it on the first call)."""
    return load() is not None


def unavailable_reason() -> str | None:
    """Why the op is not available (None when it is, or has not been tried)."""
    if _disabled():
        return "disabled by ZSM_TF_DISABLE_CUSTOM_OP"
    return _error


def _pair(v):
    return [int(i) for i in v] if hasattr(v, "__len__") else [int(v), int(v)]


def deformable_im2col(inputs, offsets, mask, kernel_size, strides=1, padding=0, dilation=1,
                      deformable_groups=1):
    """Deformable modulated im2col with the compiled op (differentiable wrt all three inputs).

    Args:
      inputs: [B, H, W, C]; offsets: [B, Ho, Wo, 2*dg*kh*kw]; mask: [B, Ho, Wo, dg*kh*kw] or None.
      kernel_size, strides, padding, dilation: int or (h, w); deformable_groups: dg, dividing C.
    Returns:
      columns [B, Ho, Wo, kh*kw*C], as :func:`zsm_tf.ops.deform_conv.deformable_im2col_gather`.
      float16/bfloat16 inputs are computed in float32 and cast back.
    """
    lib = load()
    if lib is None:
        raise RuntimeError(f"the compiled deformable op is not available "
                           f"({unavailable_reason()}); use impl='gather'")
    kernel_size = _pair(kernel_size)
    dg = int(deformable_groups)
    inputs = tf.convert_to_tensor(inputs)
    dtype = inputs.dtype
    compute = dtype if dtype in (tf.float32, tf.float64) else tf.float32
    x = tf.cast(inputs, compute)
    off = tf.cast(offsets, compute)
    if mask is None:
        s = tf.shape(off)
        mask = tf.ones(tf.stack([s[0], s[1], s[2], dg * kernel_size[0] * kernel_size[1]]), compute)
    cols = lib.deformable_im2col(x, off, tf.cast(mask, compute), kernel_size=kernel_size,
                                 strides=_pair(strides), padding=_pair(padding),
                                 dilation=_pair(dilation), deformable_groups=dg)
    return tf.cast(cols, dtype)
