"""NVRTC (CUDA's runtime compiler, ``libnvrtc``) through ctypes: the CUDA kernels of
``custom_ops/deform_im2col_gpu.cu.cc`` to cubins (``sm_XY``) and PTX (``compute_XY``) with no
``nvcc`` and no GPU. ``tensorflow[and-cuda]`` (the ``gpu`` extra) installs the library
(``nvidia-cuda-nvrtc-cu12``, ``site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12``).

Used by :mod:`zsm_tf.ops.custom_op` when it builds the op with CUDA kernels, and by the tests.
"""
from __future__ import annotations

import ctypes
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

KERNEL_SOURCE = "deform_im2col_gpu.cu.cc"
# The kernels' names in every image (extern "C" in KERNEL_SOURCE), launched by gpu_launch.h.
KERNELS = tuple(f"zsm_im2col_{f}_{t}" for t in ("f32", "f64")
                for f in ("forward", "grad_input", "grad_coord"))
# Options of every compile (NVRTC optimises device code fully by default).
OPTIONS = ("-std=c++17",)
# NVRTC 12.8+ says this for sm_60 / sm_70 (TensorFlow's list starts at sm_60) and has no option to
# silence it (nvcc's -Wno-deprecated-gpu-targets): the one message accepted from a compile.
DEPRECATION = ("nvrtc: warning: Architectures prior to '<compute/sm>_75' are deprecated and may "
               "be removed in a future release")


def unexpected_log(log: str) -> list[str]:
    """The lines of a compile log other than the sm < 75 deprecation notice (an empty list for
    a clean compile)."""
    return [ln for ln in log.splitlines() if ln.strip() and ln.strip() != DEPRECATION]


def _candidates(major: int) -> list[tuple[str, str]]:
    """(path or soname, where) of each libnvrtc to try, in order."""
    name = f"libnvrtc.so.{major}" if os.name != "nt" else f"nvrtc64_{major}0_0.dll"
    if os.environ.get("ZSM_TF_NVRTC"):
        return [(os.environ["ZSM_TF_NVRTC"], "ZSM_TF_NVRTC")]
    out = []
    for entry in sys.path:  # pip: nvidia/cuda_nvrtc/lib (cu12 wheels)
        p = Path(entry or ".", "nvidia", "cuda_nvrtc", "lib", name)
        if p.is_file():
            out.append((str(p), "pip"))
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            p = Path(os.environ[var], "lib64", name)
            if p.is_file():
                out.append((str(p), var))
    out.append((name, "system"))  # the dynamic loader's search path
    seen, uniq = set(), []
    for path, where in out:
        key = os.path.realpath(path) if os.path.isabs(path) else path
        if key not in seen:
            seen.add(key)
            uniq.append((path, where))
    return uniq


@dataclass
class Image:
    """One compiled target: ``cubin`` (bytes, None for a ``compute_XY`` target) and ``ptx``."""
    target: str
    cubin: bytes | None
    ptx: str
    log: str
    seconds: float

    @property
    def kind(self) -> str:
        return "cubin" if self.cubin is not None else "ptx"

    @property
    def data(self) -> bytes:
        return self.cubin if self.cubin is not None else self.ptx.encode() + b"\0"


class NvrtcError(RuntimeError):
    pass


class Nvrtc:
    """A loaded libnvrtc: :meth:`compile` one target, :meth:`compile_all` several in threads."""

    def __init__(self, path: str, found_in: str = ""):
        self.lib = ctypes.CDLL(path)
        self.found_in = found_in
        lib = self.lib
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = (major.value, minor.value)
        self.path = path
        if not os.path.isabs(path) and os.path.isfile("/proc/self/maps"):
            # a soname found on the loader's path: the file it opened
            for line in Path("/proc/self/maps").read_text().splitlines():
                if f"/{path}" in line:
                    self.path = line.split()[-1]
                    break

    @property
    def version_str(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    def _check(self, status: int, what: str):
        if status:
            msg = self.lib.nvrtcGetErrorString(status).decode()
            raise NvrtcError(f"{what}: {msg}")

    def supported_archs(self) -> list[int]:
        """The SM numbers this NVRTC compiles for, e.g. [50, 52, ..., 90, 100, 120]."""
        n = ctypes.c_int()
        if not hasattr(self.lib, "nvrtcGetNumSupportedArchs"):
            return []
        self._check(self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "nvrtcGetNumSupportedArchs")
        arr = (ctypes.c_int * n.value)()
        self._check(self.lib.nvrtcGetSupportedArchs(arr), "nvrtcGetSupportedArchs")
        return list(arr)

    def compile(self, source: Path, target: str, include_dirs=(), options=OPTIONS) -> Image:
        """Compiles ``source`` for ``target`` (``sm_XY``: cubin and PTX; ``compute_XY``: PTX)."""
        if not re.fullmatch(r"(sm|compute)_\d+[a-z]?", target):
            raise NvrtcError(f"bad CUDA target {target!r}: use sm_XY (cubin) or compute_XY (PTX)")
        lib, t0 = self.lib, time.perf_counter()
        prog = ctypes.c_void_p()
        self._check(lib.nvrtcCreateProgram(ctypes.byref(prog), Path(source).read_bytes(),
                                           Path(source).name.encode(), 0, None, None),
                    "nvrtcCreateProgram")
        try:
            opts = [f"--gpu-architecture={target}", *options,
                    *[f"--include-path={d}" for d in include_dirs]]
            arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
            status = lib.nvrtcCompileProgram(prog, len(opts), arr)
            size = ctypes.c_size_t()
            self._check(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
            buf = ctypes.create_string_buffer(size.value)
            self._check(lib.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
            log = buf.value.decode(errors="replace").strip()
            if status:
                raise NvrtcError(f"NVRTC {self.version_str} cannot compile {Path(source).name} "
                                 f"for {target}: {lib.nvrtcGetErrorString(status).decode()}\n{log}")
            self._check(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
            buf = ctypes.create_string_buffer(size.value)
            self._check(lib.nvrtcGetPTX(prog, buf), "nvrtcGetPTX")
            ptx = buf.value.decode()
            cubin = None
            if target.startswith("sm_"):
                self._check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
                buf = ctypes.create_string_buffer(size.value)
                self._check(lib.nvrtcGetCUBIN(prog, buf), "nvrtcGetCUBIN")
                cubin = buf.raw[:size.value]
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))
        return Image(target, cubin, ptx, log, time.perf_counter() - t0)

    def compile_all(self, source: Path, targets, include_dirs=(), threads: int | None = None):
        """[Image] of every target, compiled in parallel threads (ctypes releases the GIL)."""
        threads = threads or min(len(targets), os.cpu_count() or 1)
        with ThreadPoolExecutor(max(1, threads)) as pool:
            return list(pool.map(lambda t: self.compile(source, t, include_dirs), targets))


def find_nvrtc(major: int) -> tuple[Nvrtc | None, str | None]:
    """(the first libnvrtc of CUDA ``major`` that loads, None) or (None, why there is none)."""
    tried = []
    for path, where in _candidates(major):
        try:
            nv = Nvrtc(path, where)
        except (OSError, NvrtcError, AttributeError) as e:
            tried.append(f"{path} ({str(e).splitlines()[0][:120]})")
            continue
        if nv.version[0] != major:
            tried.append(f"{path} (NVRTC {nv.version_str}, CUDA {major}.x needed)")
            continue
        return nv, None
    return None, (f"no NVRTC of CUDA {major} found (pip's nvidia-cuda-nvrtc-cu{major}, "
                  f"CUDA_HOME, the loader's path): tried {'; '.join(tried)}")


def images_source(images, compiler: str, version: tuple) -> str:
    """C++ source defining the images table of ``custom_ops/gpu_launch.h`` (``zsm_cu::kImages``,
    ``kImageCount``, ``kCompiler``, ``kCompilerVersion``) with the images' bytes."""
    out = ["// Generated by zsm_tf/ops/nvrtc.py: GPU images of deform_im2col_gpu.cu.cc.",
           '#include "gpu_launch.h"', "namespace zsm_cu {", "namespace {"]
    for i, im in enumerate(images):
        data = im.data
        out.append(f"alignas(64) const unsigned char image{i}[{len(data)}] = {{")
        for j in range(0, len(data), 32):
            out.append(",".join(str(b) for b in data[j:j + 32]) + ",")
        out.append("};")
    out.append("}  // namespace")
    rows = [f'  {{"{im.target}", {int(re.sub(r"[^0-9]", "", im.target))}, '
            f'{int(im.cubin is None)}, image{i}, sizeof(image{i})}},' for i, im in enumerate(images)]
    out += ["extern const GpuImage kImages[] = {", *rows, "};",
            f"extern const int kImageCount = {len(images)};",
            f'extern const char kCompiler[] = "{compiler}";',
            f"extern const int kCompilerVersion = {version[0] * 1000 + version[1] * 10};",
            "}  // namespace zsm_cu", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    """``python -m zsm_tf.ops.nvrtc [--targets sm_80,compute_90] [--out gpu_images.cc]``: compiles
    the kernels with NVRTC, prints one line per target (kind, size, seconds, messages) and writes
    the images source. Default targets: TensorFlow's ``cuda_compute_capabilities``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m zsm_tf.ops.nvrtc", description=main.__doc__)
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[2] / "custom_ops"),
                    help="the custom_ops/ folder")
    ap.add_argument("--targets", default="", help="comma/space separated sm_XY / compute_XY")
    ap.add_argument("--out", default="", help="write the images source (gpu_images.cc) here")
    ap.add_argument("--major", type=int, default=0, help="CUDA major (default TensorFlow's)")
    args = ap.parse_args(argv)
    targets = [t for t in re.split(r"[,\s]+", args.targets) if t]
    major = args.major
    if not targets or not major:
        import tensorflow as tf

        info = tf.sysconfig.get_build_info()
        targets = targets or list(info.get("cuda_compute_capabilities") or [])
        major = major or int(str(info.get("cuda_version") or "12").split(".")[0])
    nv, why = find_nvrtc(major)
    if nv is None:
        print(f"error: {why}", file=sys.stderr)
        return 1
    src = Path(args.src)
    t0 = time.perf_counter()
    try:
        images = nv.compile_all(src / KERNEL_SOURCE, targets, [str(src)])
    except NvrtcError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"NVRTC {nv.version_str} ({nv.path}): {len(images)} targets in "
          f"{time.perf_counter() - t0:.2f} s")
    for im in images:
        print(f"  {im.target:<11} {im.kind:<5} {len(im.data):>8} B  {im.seconds:5.2f} s  "
              f"{'; '.join(unexpected_log(im.log)) or 'clean'}")
    if args.out:
        Path(args.out).write_text(images_source(images, f"nvrtc {nv.version_str}", nv.version))
    return 0 if not any(unexpected_log(im.log) for im in images) else 2


if __name__ == "__main__":
    sys.exit(main())
