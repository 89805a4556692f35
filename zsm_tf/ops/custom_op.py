"""Build, load and wrap the compiled deformable-sampling op of ``custom_ops/``.

Nothing happens at import time or when a layer is built: the first :func:`load` (called by
``impl="auto"`` or ``"custom_op"`` when a deformable convolution first runs, or by
:func:`custom_op_available` / :func:`build_info`) compiles the op with the system C++ compiler
against the installed TensorFlow (``tf.sysconfig`` flags) into a cache directory, keyed by a hash
of the sources, the TensorFlow version, the compilers, the flags and the CUDA architectures, then
loads it with ``tf.load_op_library``. Later processes reuse the cached library. The build goes to
a temporary directory and is renamed into place under a file lock, so concurrent processes never
see a partial library. When the build fails (no compiler, ...), one warning is emitted and
``impl="auto"`` falls back to the stock-TF gather path.

**CUDA.** The GPU kernels are built when TensorFlow is a CUDA build and a GPU is visible (or
``ZSM_TF_OP_CUDA=1``), with no ``nvcc``: NVRTC (``libnvrtc`` of TensorFlow's CUDA major version,
from pip's ``nvidia-cuda-nvrtc-cu12``, which ``tensorflow[and-cuda]`` installs; see
:mod:`zsm_tf.ops.nvrtc`) compiles ``deform_im2col_gpu.cu.cc`` in-process to a cubin for every
``sm_XY`` of TensorFlow's ``cuda_compute_capabilities`` and of the visible GPUs, and to PTX for
each ``compute_XY`` (the fallback for newer GPUs). The images are embedded in the op library (a
generated ``gpu_images.cc``) and launched through the CUDA driver API (``custom_ops/gpu_launch.h``,
``libcuda.so.1`` opened at run time), so nothing CUDA is linked. A matching ``nvcc`` (CUDA 12) is
a second route (``ZSM_TF_CUDA_COMPILER=nvcc``, or when no NVRTC is found). A CUDA build (or
load) that fails is retried CPU-only, with one warning. :func:`build_info` says what was built.

The op has no XLA kernel: do not ``jit_compile`` graphs that use it. A graph or SavedModel
containing the op needs :func:`load` called first.

Environment variables:
  ZSM_TF_DISABLE_CUSTOM_OP=1   never build or load the op (``impl="auto"`` -> gather).
  ZSM_TF_OP_CACHE=DIR          cache directory (default ``~/.cache/zsm_tf``, or under
                               ``$XDG_CACHE_HOME``).
  ZSM_TF_OP_CUDA=0|1           force the CUDA kernels off / on (on: also without a visible GPU).
  ZSM_TF_OP_MARCH=ARCH         ``-march`` value (default ``native``, keyed by the CPU; empty: none).
  ZSM_TF_CUDA_ARCH=LIST        CUDA targets, e.g. ``sm_80,compute_90``; ``native``: the visible
                               GPUs (cubins) plus PTX of the newest. Default: TensorFlow's list
                               plus the visible GPUs.
  ZSM_TF_CUDA_COMPILER=nvrtc|nvcc  the image compiler (default: NVRTC, else a matching nvcc).
  ZSM_TF_NVRTC=PATH            the libnvrtc to use.
  ZSM_TF_OP_ALLOW_NVCC_MISMATCH=1  accept an nvcc of another major version (build testing only).
  CXX, NVCC, CUDA_HOME         compilers / CUDA toolkit (CUDA_HOME: also searched for libnvrtc).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from zsm_tf.ops.conv_args import pair

OP_NAME = "ZsmTf>DeformableIm2col"
GRAD_OP_NAME = "ZsmTf>DeformableIm2colGrad"
_SOURCES = ("deform_attrs.h", "deform_im2col.h", "deform_im2col_cpu.h", "deform_im2col_gpu.h",
            "deform_im2col_op.cc", "deform_im2col_gpu.cu.cc", "gpu_launch.h",
            "winograd_conv.h", "winograd_conv_op.cc", "deform_conv_cpu.h", "deform_conv_op.cc",
            "flow_ops.cc")
_ATTRS = ("kernel_size", "strides", "padding", "dilation", "deformable_groups")

_lock = threading.Lock()
_lib = None
_tried = False
_error: str | None = None
_info: dict | None = None
_warned: set = set()


def _disabled() -> bool:
    return os.environ.get("ZSM_TF_DISABLE_CUSTOM_OP", "").strip().lower() in ("1", "true", "yes")


def _warn_once(key: str, message: str):
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


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


def gpus_visible() -> bool:
    """True when TensorFlow sees a GPU."""
    return bool(tf.config.list_physical_devices("GPU"))


# ----------------------------------------------------------------------------------------------
# CUDA toolchain


def tf_cuda_version() -> str | None:
    """The CUDA version TensorFlow was built with (``"12.5.1"``), None for a CPU-only build."""
    info = tf.sysconfig.get_build_info()
    return info.get("cuda_version") if info.get("is_cuda_build") else None


def tf_cuda_archs() -> list[str]:
    """TensorFlow's own CUDA targets, e.g. ``['sm_60', 'sm_70', 'sm_80', 'sm_89', 'compute_90']``."""
    return list(tf.sysconfig.get_build_info().get("cuda_compute_capabilities") or [])


@dataclass
class Nvcc:
    path: str
    version: tuple  # (major, minor)
    found_in: str   # "NVCC", "CUDA_HOME", "PATH", "pip", ...

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))


def nvcc_version(path: str) -> tuple | None:
    """(major, minor) from ``nvcc --version``, None when it does not run."""
    try:
        out = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def nvcc_candidates() -> list[tuple[str, str]]:
    """(path, where) of every nvcc to consider, in order; ``$NVCC`` alone when it is set."""
    if os.environ.get("NVCC"):
        found = shutil.which(os.environ["NVCC"])
        return [(found, "NVCC")] if found else []
    places = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            places.append((Path(os.environ[var]) / "bin" / "nvcc", var))
    if shutil.which("nvcc"):
        places.append((Path(shutil.which("nvcc")), "PATH"))
    for entry in sys.path:  # pip's NVIDIA wheels: nvidia/cuda_nvcc/bin (cu12), nvidia/cu13/bin
        if entry and os.path.isdir(os.path.join(entry, "nvidia")):
            places += [(p, "pip") for p in sorted(Path(entry, "nvidia").glob("*/bin/nvcc"))]
    places.append((Path("/usr/local/cuda/bin/nvcc"), "/usr/local/cuda"))
    out, seen = [], set()
    for path, where in places:
        if path.is_file() and os.access(path, os.X_OK) and path.resolve() not in seen:
            seen.add(path.resolve())
            out.append((str(path), where))
    return out


def find_nvcc() -> tuple[Nvcc | None, str | None]:
    """(the nvcc to use, None) or (None, why there is none): the first candidate whose major
    version is TensorFlow's CUDA major version."""
    want = tf_cuda_version()
    if want is None:
        return None, "TensorFlow is not a CUDA build"
    major = int(want.split(".")[0])
    allow_any = os.environ.get("ZSM_TF_OP_ALLOW_NVCC_MISMATCH", "").strip() == "1"
    others = []
    for path, where in nvcc_candidates():
        version = nvcc_version(path)
        if version is None:
            others.append(f"{path} (does not run)")
        elif version[0] == major or allow_any:
            return Nvcc(path, version, where), None
        else:
            others.append(f"nvcc {version[0]}.{version[1]} at {path}")
    if others:
        return None, (f"{', '.join(others)} does not match TensorFlow's CUDA {want} (major "
                      f"{major} needed)")
    return None, (f"no nvcc found (NVCC, CUDA_HOME, PATH, pip's nvidia-cuda-nvcc-cu12, "
                  f"/usr/local/cuda); TensorFlow needs CUDA {major}.x")


def _nvcc_supported(nvcc: Nvcc) -> tuple[set, set]:
    """(real, virtual) targets this nvcc can compile for (empty sets when it cannot list them)."""
    lists = []
    for flag in ("--list-gpu-code", "--list-gpu-arch"):
        try:
            out = subprocess.run([nvcc.path, flag], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, timeout=60).stdout
            lists.append(set(out.split()))
        except (OSError, subprocess.SubprocessError):
            lists.append(set())
    return lists[0], lists[1]


@dataclass
class CudaCompiler:
    """What compiles the CUDA kernels to GPU images: NVRTC (default) or nvcc."""
    kind: str        # "nvrtc" or "nvcc"
    version: tuple   # (major, minor)
    path: str
    found_in: str    # "pip", "CUDA_HOME", "PATH", ...
    tool: object     # nvrtc.Nvrtc or Nvcc

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))

    def supported(self) -> tuple[set, set]:
        """(real, virtual) targets it compiles for; empty sets when unknown."""
        if self.kind == "nvcc":
            return _nvcc_supported(self.tool)
        sms = self.tool.supported_archs()
        return {f"sm_{a}" for a in sms}, {f"compute_{a}" for a in sms}


def find_cuda_compiler() -> tuple[CudaCompiler | None, str | None]:
    """(the compiler to use, None) or (None, why there is none): ``$ZSM_TF_CUDA_COMPILER``
    (``nvrtc`` or ``nvcc``), else NVRTC of TensorFlow's CUDA major version (pip's
    ``nvidia-cuda-nvrtc-cu12``, which ``tensorflow[and-cuda]`` installs), else a matching nvcc."""
    from zsm_tf.ops import nvrtc

    want = tf_cuda_version()
    if want is None:
        return None, "TensorFlow is not a CUDA build"
    choice = os.environ.get("ZSM_TF_CUDA_COMPILER", "").strip().lower()
    if choice not in ("", "nvrtc", "nvcc"):
        raise RuntimeError(f"ZSM_TF_CUDA_COMPILER must be nvrtc or nvcc, got {choice!r}")
    whys = []
    if choice in ("", "nvrtc"):
        nv, why = nvrtc.find_nvrtc(int(want.split(".")[0]))
        if nv is not None:
            return CudaCompiler("nvrtc", nv.version, nv.path, nv.found_in, nv), None
        whys.append(why + f" (pip install 'nvidia-cuda-nvrtc-cu{want.split('.')[0]}', which "
                          f"the gpu extra, tensorflow[and-cuda], installs)")
    if choice in ("", "nvcc"):
        nvcc, why = find_nvcc()
        if nvcc is not None:
            return CudaCompiler("nvcc", nvcc.version, nvcc.path, nvcc.found_in, nvcc), None
        whys.append(why)
    return None, "; ".join(whys)


def _visible_gpu_archs() -> list[str]:
    archs = []
    for gpu in tf.config.list_physical_devices("GPU"):
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if cc:
            archs.append(f"sm_{cc[0]}{cc[1]}")
    return sorted(set(archs), key=lambda a: int(a[3:]))


def _target_number(a: str) -> int:
    return int(re.sub(r"\D", "", a))


def cuda_archs(compiler: CudaCompiler) -> tuple[list[str], list[str]]:
    """(targets to compile for, notes): ``$ZSM_TF_CUDA_ARCH``, or TensorFlow's list plus the
    visible GPUs' own ``sm_XY``, less what the compiler cannot compile; PTX of the newest target
    is added when the list has none."""
    notes = []
    spec = os.environ.get("ZSM_TF_CUDA_ARCH", "").strip()
    if spec == "native":
        archs = _visible_gpu_archs()
        if not archs:
            notes.append("ZSM_TF_CUDA_ARCH=native without a visible GPU: TensorFlow's list")
    else:
        archs = [a for a in re.split(r"[,\s]+", spec) if a]
    if not archs:
        archs = tf_cuda_archs() or ["sm_60", "sm_70", "sm_80", "sm_89", "compute_90"]
        archs += [a for a in _visible_gpu_archs() if a not in archs]  # cubins for these GPUs
    bad = [a for a in archs if not re.fullmatch(r"(sm|compute)_\d+", a)]
    if bad:
        raise RuntimeError(f"bad CUDA target(s) {bad}: use sm_XY (cubin) or compute_XY (PTX)")
    real, virtual = compiler.supported()
    if real or virtual:
        dropped = [a for a in archs if a not in (real if a.startswith("sm_") else virtual)]
        if dropped:
            notes.append(f"{compiler.kind} {compiler.version_str} cannot compile "
                         f"{', '.join(dropped)}")
        archs = [a for a in archs if a not in dropped]
        if not archs:
            raise RuntimeError(f"{compiler.kind} {compiler.version_str} supports none of the "
                               f"CUDA targets")
    archs = list(dict.fromkeys(archs))
    if not any(a.startswith("compute_") for a in archs):
        archs.append(max(archs, key=_target_number).replace("sm_", "compute_"))
    return archs, notes


def _nvcc_images(nvcc: Nvcc, src: Path, archs: list[str], tmp: str):
    """[nvrtc.Image] of every target compiled by nvcc (``-cubin`` / ``-ptx``)."""
    import time

    from zsm_tf.ops import nvrtc

    images = []
    for a in archs:
        cubin = a.startswith("sm_")
        out = os.path.join(tmp, f"{a}.{'cubin' if cubin else 'ptx'}")
        t0 = time.perf_counter()
        log = _run([nvcc.path, "-cubin" if cubin else "-ptx", f"-arch={a}", "-O3", "-std=c++17",
                    "-Wno-deprecated-gpu-targets", f"-I{src}", "-x", "cu",
                    str(src / nvrtc.KERNEL_SOURCE), "-o", out])
        data = Path(out).read_bytes()
        images.append(nvrtc.Image(a, data if cubin else None, "" if cubin else data.decode(),
                                  log.strip(), time.perf_counter() - t0))
    return images


# ----------------------------------------------------------------------------------------------
# Build


@dataclass
class _Plan:
    name: str                  # library file name in the cache
    steps: list                # build steps; each a list of commands run together
    info: dict = field(default_factory=dict)
    prepare: object = None     # callable(tmp_dir) run before the steps (writes generated sources)


def _cpu_fingerprint() -> str:
    """The CPU model and flags: a -march=native build is only reused on the same kind of CPU."""
    info = platform.machine() + platform.processor()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info += "".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        pass
    return info


def _cuda_wanted() -> tuple[CudaCompiler | None, str | None]:
    """(compiler, None) when the CUDA kernels are to be built, else (None, why not)."""
    flag = os.environ.get("ZSM_TF_OP_CUDA", "").strip()
    if flag == "0":
        return None, "ZSM_TF_OP_CUDA=0"
    if tf_cuda_version() is None:
        return None, "TensorFlow is not a CUDA build"
    if flag != "1" and not gpus_visible():
        return None, "no GPU visible (ZSM_TF_OP_CUDA=1 builds the CUDA kernels anyway)"
    return find_cuda_compiler()


def _make_images(compiler: CudaCompiler, src: Path, archs: list[str], info: dict):
    """The plan's prepare step: compiles the GPU images and writes ``{tmp}/gpu_images.cc``."""
    from zsm_tf.ops import nvrtc

    def prepare(tmp: str):
        if compiler.kind == "nvrtc":
            images = compiler.tool.compile_all(src / nvrtc.KERNEL_SOURCE, archs, [str(src)])
        else:
            images = _nvcc_images(compiler.tool, src, archs, tmp)
        info["cuda_compile_seconds"] = {im.target: round(im.seconds, 2) for im in images}
        info["cuda_images"] = {im.target: f"{im.kind} {len(im.data)} B" for im in images}
        logs = {im.target: im.log for im in images if nvrtc.unexpected_log(im.log)}
        if logs:
            info.setdefault("cuda_notes", []).append(f"compiler messages: {logs}")
        Path(tmp, "gpu_images.cc").write_text(
            nvrtc.images_source(images, f"{compiler.kind} {compiler.version_str}",
                                compiler.version))
    return prepare


def build_flags(cxx_version: str, march: str) -> tuple[list[str], list[str]]:
    """(compile flags, link flags) of the op library for a compiler (its ``--version`` text) and
    a ``-march`` value (empty: none). The one list: the lazy build below and
    ``custom_ops/Makefile`` (``python -m zsm_tf.ops.custom_op --cxxflags / --ldflags``) use it."""
    # -fno-trapping-math (clang's default): floating-point compares and selects may be
    # if-converted, so branch-free loops with them vectorise (the fused deformable op's
    # sigmoid); it changes no value (no reassociation, unlike -ffast-math)
    cflags = ["-O3", "-fPIC", "-fopenmp-simd", "-fno-trapping-math", "-DNDEBUG",
              "-Wno-deprecated-declarations", *tf.sysconfig.get_compile_flags()]
    if "clang" not in cxx_version.lower():
        cflags.append("-Wno-interference-size")  # from Eigen headers with g++ >= 12
    if march:
        cflags.append(f"-march={march}")
        # TensorFlow's bundled Eigen does not compile its AVX512-FP16 packets (Sapphire Rapids
        # and newer: "expected initializer before '<' token" in PacketMathFP16.h); the kernels
        # use no half-precision arithmetic, so build without that ISA extension.
        major = _compiler_major(cxx_version)
        if major is not None and major >= (14 if "clang" in cxx_version.lower() else 12):
            cflags.append("-mno-avx512fp16")
    return cflags, tf.sysconfig.get_link_flags()


def _compiler_major(cxx_version: str):
    """The major version in a compiler's ``--version`` text (``g++ (Debian 12.2.0-14) 12.2.0``,
    ``clang version 17.0.6``), or None."""
    import re

    first = cxx_version.splitlines()[0] if cxx_version else ""
    m = re.search(r"(?:\)\s+|version\s+)(\d+)\.\d+", first)
    return int(m.group(1)) if m else None


def _compiler() -> tuple[str, str]:
    """(path, ``--version`` text) of ``$CXX`` (default g++)."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'g++')}) on PATH")
    return cxx, _run([cxx, "--version"])


def _plans(src: Path) -> list[_Plan]:
    """The CUDA plan (when wanted and possible) then the CPU-only plan."""
    cxx, cxx_version = _compiler()
    march = os.environ.get("ZSM_TF_OP_MARCH", "native").strip()
    cflags, lflags = build_flags(cxx_version, march)

    key = hashlib.sha256()  # not the source path: checkouts with the same sources share a build
    for f in _SOURCES:
        key.update(f.encode() + b"\0" + (src / f).read_bytes())
    key.update(repr((tf.__version__, cflags, lflags, cxx_version)).encode())
    if march == "native":
        key.update(_cpu_fingerprint().encode())
    cflags.append(f"-I{src}")
    op_cc = str(src / "deform_im2col_op.cc")
    wino_cc = str(src / "winograd_conv_op.cc")  # CPU only, in both libraries
    fused_cc = str(src / "deform_conv_op.cc")   # CPU only, in both libraries
    flow_cc = str(src / "flow_ops.cc")   # CPU only, in both libraries
    base = {"cxx": cxx, "march": march or None, "tf_version": tf.__version__,
            "tf_cuda_version": tf_cuda_version()}
    cpu_key = key.copy()
    cpu = _Plan(f"deform_im2col_tf{tf.__version__}_cpu_{cpu_key.hexdigest()[:16]}.so",
                [[[cxx, *cflags, "-shared", op_cc, wino_cc, fused_cc, flow_cc, "-o", "{out}",
                   *lflags]]],
                {**base, "cuda": False, "cuda_compiler": None, "cuda_compiler_version": None,
                 "cuda_archs": []})

    try:
        compiler, why = _cuda_wanted()
        archs, notes = cuda_archs(compiler) if compiler else ([], [])
    except RuntimeError as e:
        compiler, why = None, str(e)
    if compiler is None:
        cpu.info["cuda_skipped"] = why
        return [cpu]
    from zsm_tf.ops import nvrtc

    key.update(repr((compiler.kind, compiler.version, archs, nvrtc.OPTIONS)).encode())
    key.update(Path(nvrtc.__file__).read_bytes())  # the image generator
    if compiler.kind == "nvcc":
        key.update(_run([compiler.path, "--version"]).encode())
    cxx_cmd = [cxx, *cflags, "-DZSM_WITH_CUDA", "-c", op_cc, "-o", "{tmp}/op.o"]
    img_cmd = [cxx, "-O1", "-fPIC", "-std=c++17", f"-I{src}", "-c", "{tmp}/gpu_images.cc",
               "-o", "{tmp}/gpu_images.o"]
    wino_cmd = [cxx, *cflags, "-c", wino_cc, "-o", "{tmp}/wino.o"]
    fused_cmd = [cxx, *cflags, "-c", fused_cc, "-o", "{tmp}/fused.o"]
    flow_cmd = [cxx, *cflags, "-c", flow_cc, "-o", "{tmp}/flow.o"]
    # No CUDA library is linked: the driver (libcuda.so.1) is opened at run time; dlopen is
    # glibc's. --no-undefined checks that every other symbol resolves.
    no_undefined = ["-Wl,--no-undefined"] if sys.platform.startswith("linux") else []
    link = [cxx, "-shared", "{tmp}/op.o", "{tmp}/gpu_images.o", "{tmp}/wino.o", "{tmp}/fused.o",
            "{tmp}/flow.o", "-o", "{out}",
            *lflags,
            *no_undefined]
    info = {**base, "cuda": True, "cuda_compiler": compiler.kind,
            "cuda_compiler_version": compiler.version_str, "cuda_compiler_path": compiler.path,
            "cuda_compiler_found_in": compiler.found_in, "cuda_archs": archs,
            "cuda_notes": notes}
    cuda = _Plan(f"deform_im2col_tf{tf.__version__}_cuda_{key.hexdigest()[:16]}.so",
                 [[cxx_cmd, img_cmd, wino_cmd, fused_cmd, flow_cmd], [link]], info,
                 _make_images(compiler, src, archs, info))
    return [cuda, cpu]



@contextlib.contextmanager
def _exclusive(path: Path):
    """An inter-process lock on ``path`` (fcntl on POSIX, msvcrt on Windows), imported here so
    that importing this module needs no POSIX-only module."""
    with open(path, "a+") as f:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _cached(plan: _Plan, lib: Path, meta: Path) -> Path:
    """A library already in the cache: what its build measured joins the plan's info."""
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads(meta.read_text())
        for k in ("cuda_compile_seconds", "cuda_images", "build_seconds"):
            if k in saved:
                plan.info[k] = saved[k]
    return lib


def _build_plan(plan: _Plan, verbose: bool = False) -> Path:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    lib, meta = cache / plan.name, cache / (plan.name + ".json")
    if lib.is_file():
        return _cached(plan, lib, meta)
    with _exclusive(cache / (plan.name + ".lock")):  # one builder at a time
        if lib.is_file():
            return _cached(plan, lib, meta)
        t0 = time.perf_counter()
        tmp = tempfile.mkdtemp(prefix=".build-", dir=cache)
        try:
            out = os.path.join(tmp, plan.name)
            if plan.prepare is not None:
                plan.prepare(tmp)
            for step in plan.steps:
                cmds = [[a.format(tmp=tmp, out=out) for a in cmd] for cmd in step]
                if verbose:
                    for cmd in cmds:
                        print(" ".join(cmd))
                procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True) for c in cmds]
                logs = [p.communicate()[0] for p in procs]
                for cmd, p, log in zip(cmds, procs, logs):
                    if p.returncode:
                        (cache / (plan.name + ".log")).write_text(" ".join(cmd) + "\n" + log)
                        raise RuntimeError(f"compiling the op failed, see "
                                           f"{cache / (plan.name + '.log')}:\n{log[-2000:]}")
            plan.info["build_seconds"] = round(time.perf_counter() - t0, 1)
            meta_tmp = os.path.join(tmp, "meta.json")
            Path(meta_tmp).write_text(json.dumps(plan.info, indent=1))
            os.replace(meta_tmp, meta)
            os.replace(out, lib)  # atomic: readers see no library or a complete one
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return lib


def build(verbose: bool = False) -> Path:
    """Builds the op library into the cache unless it is there already; returns its path.
    A CUDA build that fails is retried CPU-only (one warning)."""
    return _build_and_load(verbose, load=False)[0]


def _build_and_load(verbose: bool, load: bool):
    """(library path, loaded module or None, build info) of the first plan that works."""
    src = source_dir()
    if src is None:
        raise RuntimeError("the custom_ops/ sources were not found beside the zsm_tf package")
    plans = _plans(src)
    for i, plan in enumerate(plans):
        try:
            path = _build_plan(plan, verbose)
            module = tf.load_op_library(str(path)) if load else None
        except Exception as e:  # noqa: BLE001 - a failed CUDA build falls back to the CPU plan
            if i + 1 == len(plans):
                raise
            reason = f"{type(e).__name__}: {str(e).strip()[-1500:]}"
            plans[-1].info["cuda_skipped"] = f"the CUDA build failed: {reason}"
            _warn_once("cuda", f"zsm_tf: building the deformable op with CUDA kernels "
                                     f"failed; building it CPU-only ({reason})")
            continue
        return path, module, {**plan.info, "library": str(path)}
    raise AssertionError("unreachable")


def cuda_driver_version() -> int | None:
    """``cuDriverGetVersion`` of the installed NVIDIA driver (12040 for 12.4), None without one."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int()
        return v.value if cuda.cuDriverGetVersion(ctypes.byref(v)) == 0 else None
    except (OSError, AttributeError):
        return None


def gpu_image_warnings(library: str, capabilities, driver_version: int | None) -> list[str]:
    """What the op library's GPU images mean for GPUs of these compute capabilities
    ([(major, minor)]) under this driver: one line per GPU that has no image, or only a PTX
    image newer than the driver (which would fail to load with CUDA error 222 at the first
    launch). Empty when every GPU has a cubin (or usable PTX)."""
    import ctypes

    lib = ctypes.CDLL(library)
    lib.zsm_tf_gpu_images.restype = ctypes.c_char_p
    compiler, listed = lib.zsm_tf_gpu_images().decode().split(";")
    images = [item.split(":") for item in listed.split(",") if item]
    cversion = tuple(int(x) for x in compiler.split()[1].split("."))
    out = []
    for major, minor in capabilities:
        gpu = f"sm_{major}{minor}"
        i = lib.zsm_tf_choose_image(int(major), int(minor))
        if i < 0:
            out.append(f"zsm_tf: the op's GPU images ({', '.join(t for t, *_ in images)}) have "
                       f"none for this {gpu} GPU: its GPU kernels will fail; rebuild with "
                       f"ZSM_TF_CUDA_ARCH={gpu}")
        elif images[i][1] == "ptx" and driver_version is not None and \
                driver_version < cversion[0] * 1000 + cversion[1] * 10:
            out.append(f"zsm_tf: this {gpu} GPU has no cubin in the op and would run the "
                       f"{images[i][0]} PTX of {compiler}, newer than the NVIDIA driver "
                       f"({driver_version // 1000}.{driver_version % 1000 // 10}): it would fail "
                       f"to load (CUDA error 222). Update the driver, or rebuild for this GPU "
                       f"(ZSM_TF_CUDA_ARCH={gpu}, or unset it: the visible GPUs get cubins)")
    return out


def _check_gpu_images(info: dict):
    """One warning per problem of the loaded library's GPU images on the visible GPUs."""
    if not info.get("cuda"):
        return
    ccs = []
    for gpu in tf.config.list_physical_devices("GPU"):
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if cc:
            ccs.append(tuple(cc))
    if ccs:
        try:
            lines = gpu_image_warnings(info["library"], sorted(set(ccs)), cuda_driver_version())
        except (OSError, AttributeError, ValueError, IndexError) as e:  # never breaks loading
            lines = [f"zsm_tf: cannot check the op's GPU images: {e}"]
        for line in lines:
            _warn_once(line, line)


def _register_gradient(lib):
    def grad(op, grad_columns):
        attrs = {a: op.get_attr(a) for a in _ATTRS}
        return _grad_fn(lib)(op.inputs[0], op.inputs[1], op.inputs[2], grad_columns, **attrs)

    try:
        tf.RegisterGradient(OP_NAME)(grad)
    except KeyError:  # already registered in this process (module reloaded)
        pass


def _forward_fn(lib):
    return lib.zsm_tf_deformable_im2col


def _grad_fn(lib):
    return lib.zsm_tf_deformable_im2col_grad


def load():
    """The loaded op module (``tf.load_op_library``), building it first if needed; None when it
    cannot be built or loaded (one warning) or ``ZSM_TF_DISABLE_CUSTOM_OP=1``."""
    global _lib, _tried, _error, _info
    if _disabled():
        return None
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            _tried = True
            try:
                _, lib, info = _build_and_load(False, load=True)
                _register_gradient(lib)
                _lib, _info = lib, info
                _check_gpu_images(info)
                if os.environ.get("ZSM_TF_OP_CUDA", "").strip() == "1" and not info["cuda"]:
                    _warn_once("cuda", f"zsm_tf: ZSM_TF_OP_CUDA=1 but the deformable op "
                                              f"was built CPU-only: {info.get('cuda_skipped')}")
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


def registered_devices() -> set[str]:
    """Device types with a registered kernel of the op in this process (``{"CPU", "GPU"}``)."""
    from tensorflow.python.framework import kernels

    return {k.device_type for k in kernels.get_registered_kernels_for_op(OP_NAME).kernel}


def has_cuda_kernels() -> bool:
    """True when the loaded op library has GPU kernels (loads it on the first call)."""
    return load() is not None and "GPU" in registered_devices()


def build_info() -> dict:
    """What was built and loaded (building and loading it on the first call): ``library`` (path or
    None), ``cuda`` (GPU kernels compiled in), ``registered_devices`` (kernel device types in
    this process), ``cuda_compiler`` (``"nvrtc"`` or ``"nvcc"``), ``cuda_compiler_version``,
    ``cuda_archs`` (targets), ``cuda_images``, ``cuda_compile_seconds`` (per target),
    ``cuda_skipped`` (why there are no GPU kernels), ``tf_cuda_version``, ``cxx``, ``march``,
    ``build_seconds``, ``error`` (why there is no op)."""
    if load() is None:
        return {"library": None, "cuda": False, "registered_devices": [],
                "error": unavailable_reason()}
    return {**_info, "registered_devices": sorted(registered_devices()), "error": None}


def deformable_im2col(inputs, offsets, mask, kernel_size, strides=1, padding=0, dilation=1,
                      deformable_groups=1, cast_back=True):
    """Deformable modulated im2col with the compiled op (differentiable wrt all three inputs).

    Args:
      inputs: [B, H, W, C]; offsets: [B, Ho, Wo, 2*dg*kh*kw]; mask: [B, Ho, Wo, dg*kh*kw] or None.
      kernel_size, strides, padding, dilation: int or (h, w); deformable_groups: dg, dividing C.
    Returns:
      columns [B, Ho, Wo, kh*kw*C], as :func:`zsm_tf.ops.deform_conv.deformable_im2col_gather`.
      float16/bfloat16 inputs are computed in float32 and cast back (``cast_back=False``: the
      float32 columns, for a float32 GEMM; casting them costs several times the GEMM). Empty
      tensors give empty columns (and zero gradients).
    """
    lib = load()
    if lib is None:
        raise RuntimeError(f"the compiled deformable op is not available "
                           f"({unavailable_reason()}); use impl='gather'")
    kernel_size = list(pair(kernel_size, "kernel_size"))
    dg = int(deformable_groups)
    inputs = tf.convert_to_tensor(inputs)
    dtype = inputs.dtype
    compute = dtype if dtype in (tf.float32, tf.float64) else tf.float32
    x = tf.cast(inputs, compute)
    off = tf.cast(offsets, compute)
    if mask is None:
        s = tf.shape(off)
        mask = tf.ones(tf.stack([s[0], s[1], s[2], dg * kernel_size[0] * kernel_size[1]]), compute)
    cols = _forward_fn(lib)(x, off, tf.cast(mask, compute), kernel_size=kernel_size,
                            strides=list(pair(strides, "strides")), padding=list(pair(padding, "padding")),
                            dilation=list(pair(dilation, "dilation")), deformable_groups=dg)
    return tf.cast(cols, dtype) if cast_back else cols


if __name__ == "__main__":   # the build flags for custom_ops/Makefile: one source
    import argparse

    parser = argparse.ArgumentParser(description="print the op library's build flags")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--cxxflags", action="store_true")
    which.add_argument("--ldflags", action="store_true")
    args = parser.parse_args()
    cflags, lflags = build_flags(_compiler()[1], os.environ.get("ZSM_TF_OP_MARCH", "native").strip())
    print(" ".join(cflags if args.cxxflags else lflags))
