"""The GPU kernels built from pip alone (issue 23), proven without a GPU: NVRTC compiles
custom_ops/deform_im2col_gpu.cu.cc for every target with no error or warning; each cubin is a CUDA
ELF of its SM holding every kernel; each kernel's PTX parameters have the sizes the op's
driver-API launches pass; the op with GPU kernels builds with NVRTC (no nvcc), links with
--no-undefined and no CUDA library, loads in TensorFlow with GPU and CPU kernels registered and
passes the golden case on the CPU; the image chosen per GPU is right.

Needs pip's nvidia-cuda-nvrtc-cu12 (``tensorflow[and-cuda]`` has it; .ci/run installs it alone);
skipped without it unless ZSM_TF_REQUIRE_NVRTC=1 (CI), which makes a missing NVRTC a failure.
"""
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from zsm_tf.ops import custom_op, nvrtc

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "custom_ops"
# TensorFlow 2.21's own targets, plus Hopper and Blackwell cubins (what a visible GPU adds)
EXTRA = ["sm_90", "sm_100"]


@pytest.fixture(scope="module")
def nv():
    version = custom_op.tf_cuda_version()
    if version is None:
        pytest.skip("TensorFlow is not a CUDA build")
    lib, why = nvrtc.find_nvrtc(int(version.split(".")[0]))
    if lib is None:
        if os.environ.get("ZSM_TF_REQUIRE_NVRTC") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return lib


@pytest.fixture(scope="module")
def targets(nv):
    tf_list = custom_op.tf_cuda_archs()
    assert tf_list, "TensorFlow lists no CUDA targets"
    supported = set(nv.supported_archs())
    return tf_list + [a for a in EXTRA if int(a[3:]) in supported and a not in tf_list]


@pytest.fixture(scope="module")
def images(nv, targets):
    return {im.target: im for im in nv.compile_all(SRC / nvrtc.KERNEL_SOURCE, targets, [str(SRC)])}


def test_every_target_compiles_without_error_or_warning(images, targets):
    assert list(images) == targets
    assert any(t.startswith("compute_") for t in targets)  # the PTX fallback
    for t, im in images.items():
        assert nvrtc.unexpected_log(im.log) == [], (t, im.log)
        if im.log:  # the only message NVRTC may print: its sm < 75 deprecation notice
            assert int(t.split("_")[1]) < 75, (t, im.log)
        assert (im.kind == "cubin") == t.startswith("sm_")
        assert f".target sm_{t.split('_')[1]}" in im.ptx


def test_unexpected_log_catches_warnings():
    assert nvrtc.unexpected_log(nvrtc.DEPRECATION + "\n") == []
    assert nvrtc.unexpected_log('x.cu(3): warning #177-D: variable "v" was declared but never '
                                'referenced') != []


def _elf(data: bytes):
    """(e_machine, e_flags, EI_OSABI, EI_ABIVERSION, {section name}, {FUNC symbol name})."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1  # ELF64, little-endian
    e_machine, = struct.unpack_from("<H", data, 18)
    e_shoff, = struct.unpack_from("<Q", data, 40)
    e_flags, = struct.unpack_from("<I", data, 48)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 58)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize)
                for i in range(e_shnum)]

    def cstr(off):
        return data[off:data.index(b"\0", off)].decode()

    shstr = sections[e_shstrndx][4]
    names = {cstr(shstr + s[0]) for s in sections}
    funcs = set()
    for s in sections:
        if s[1] == 2:  # SHT_SYMTAB; sh_link: its string table
            strtab = sections[s[6]][4]
            for j in range(s[5] // 24):
                st_name, st_info = struct.unpack_from("<IB", data, s[4] + j * 24)
                if st_info & 0xF == 2:  # STT_FUNC
                    funcs.add(cstr(strtab + st_name))
    return e_machine, e_flags, data[7], data[8], names, funcs


def _cubin_sm(e_flags: int, abi_version: int) -> int:
    """The SM a cubin is for: e_flags bits 0-7 (CUDA ELF ABI <= 7), bits 8-15 (ABI 8, sm_100+)."""
    return (e_flags >> 8) & 0xFF if abi_version >= 8 else e_flags & 0xFF


def test_cubins_are_cuda_elf_of_their_sm_with_every_kernel(images):
    cubins = {t: im for t, im in images.items() if im.cubin is not None}
    assert len(cubins) >= 4
    for t, im in cubins.items():
        machine, flags, osabi, abi, sections, funcs = _elf(im.cubin)
        assert machine == 190, t  # EM_CUDA
        assert _cubin_sm(flags, abi) == int(t[3:]), (t, hex(flags), abi)
        for k in nvrtc.KERNELS:
            assert k in funcs and f".text.{k}" in sections, (t, k)


def test_cubin_sm_check_fails_for_another_target(images):
    """The SM check above can fail: sm_60's cubin is not sm_80's."""
    a, b = images.get("sm_60"), images.get("sm_80")
    if a is None or b is None:
        pytest.skip("needs sm_60 and sm_80 in the targets")
    _, fa, _, abi_a, _, _ = _elf(a.cubin)
    _, fb, _, abi_b, _, _ = _elf(b.cubin)
    assert _cubin_sm(fa, abi_a) == 60 and _cubin_sm(fb, abi_b) == 80


PTX_TYPE_BYTES = {"b8": 1, "u8": 1, "s8": 1, "b16": 2, "u16": 2, "s16": 2, "f16": 2, "b32": 4,
                  "u32": 4, "s32": 4, "f32": 4, "b64": 8, "u64": 8, "s64": 8, "f64": 8}


def ptx_params(ptx: str) -> dict:
    """{kernel: [(size, align)]} of every .entry's parameters, from the PTX text, e.g.
    ``.param .align 8 .b8 k_param_0[88]`` (88, 8) or ``.param .u64 .ptr .align 1 k_param_1``
    (8, 8; an .align after .ptr is the pointee's)."""
    out = {}
    for m in re.finditer(r"\.entry\s+(\w+)\s*\((.*?)\)\s*\{", ptx, re.S):
        params = []
        for decl in filter(str.strip, m.group(2).split(",")):
            tokens = decl.split()
            assert tokens[0] == ".param", decl
            types = [i for i, tok in enumerate(tokens) if tok[1:] in PTX_TYPE_BYTES]
            assert len(types) == 1, decl
            i = types[0]
            width = PTX_TYPE_BYTES[tokens[i][1:]]
            align = int(tokens[2]) if tokens[1] == ".align" and i == 3 else width
            count = re.fullmatch(r"\w+(?:\[(\d+)\])?", tokens[-1]).group(1)
            params.append((width * int(count or 1), align))
        out[m.group(1)] = params
    return out


def host_params(spec: str) -> dict:
    """{kernel: [(size, align)]} from the op library's zsm_tf_kernel_params()."""
    out = {}
    for item in filter(None, spec.split(";")):
        name, sizes = item.split("=")
        out[name] = [tuple(map(int, s.split(":"))) for s in sizes.split(",")]
    return out


def test_ptx_param_parser():
    ptx = (".visible .entry k(\n\t.param .align 8 .b8 k_param_0[88],\n\t.param .u64 k_param_1,\n"
           "\t.param .u64 .ptr .align 1 k_param_2,\n\t.param .u32 k_param_3\n)\n{\n}\n")
    assert ptx_params(ptx) == {"k": [(88, 8), (8, 8), (8, 8), (4, 4)]}
    assert host_params("k=88:8,8:8;j=4:4;") == {"k": [(88, 8), (8, 8)], "j": [(4, 4)]}


BUILD_CHECK = """
import ctypes, json, sys
import numpy as np
from zsm_tf.ops import custom_op, deform_conv2d
info = custom_op.build_info()
g = np.load(sys.argv[1])
t = lambda a: np.transpose(a, (0, 2, 3, 1))
out = deform_conv2d(t(g["x"]), t(g["offset"]), t(g["mask"]), np.transpose(g["weight"], (2, 3, 1, 0)),
                    g["bias"], strides=int(g["stride"]), padding=int(g["padding"]),
                    dilation=int(g["dilation"]), deformable_groups=int(g["deformable_groups"]),
                    impl="custom_op")
info["golden_max_err"] = float(np.abs(out.numpy() - t(g["output"])).max())
lib = ctypes.CDLL(info["library"])
for f in ("zsm_tf_kernel_params", "zsm_tf_gpu_images", "zsm_tf_driver_error"):
    getattr(lib, f).restype = ctypes.c_char_p
    info[f] = getattr(lib, f)().decode()
ccs = [(5, 2), (6, 0), (6, 1), (7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)]
info["choices"] = {f"{a}.{b}": lib.zsm_tf_choose_image(a, b) for a, b in ccs}
info["warnings_old_driver"] = custom_op.gpu_image_warnings(info["library"], ccs, 12040)
info["warnings_new_driver"] = custom_op.gpu_image_warnings(info["library"], ccs, 13000)
print(json.dumps(info))
"""


@pytest.fixture(scope="module")
def built(nv, shared_dir, tmp_path_factory):
    """build_info() and more of an op library built with ZSM_TF_OP_CUDA=1 and no nvcc anywhere,
    in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH", "NVCC")}
    bin_dir = Path(sys.executable).parent
    env.update(PYTHONPATH=str(ROOT), ZSM_TF_OP_CUDA="1", TF_CPP_MIN_LOG_LEVEL="3",
               NVCC=str(tmp_path_factory.mktemp("none") / "nvcc"),  # an nvcc that is not there
               PATH=os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"]))  # no /usr/local/bin
    env.pop("ZSM_TF_CUDA_ARCH", None)
    env.pop("ZSM_TF_CUDA_COMPILER", None)
    out = subprocess.run([sys.executable, "-c", BUILD_CHECK,
                          str(shared_dir / "golden" / "deform_conv_modulated.npz")],
                         cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_op_builds_with_nvrtc_only_and_loads_with_gpu_and_cpu_kernels(built, nv):
    assert built["cuda"] and built["error"] is None
    assert built["cuda_compiler"] == "nvrtc" and built["cuda_compiler_version"] == nv.version_str
    assert built["registered_devices"] == ["CPU", "GPU"]
    assert built["golden_max_err"] < 1e-4  # the CPU kernels of this library
    tf_list = custom_op.tf_cuda_archs()
    assert built["cuda_archs"][:len(tf_list)] == tf_list  # then the visible GPUs' own, if any
    assert all(a.startswith("sm_") for a in built["cuda_archs"][len(tf_list):])
    assert set(built["cuda_compile_seconds"]) == set(built["cuda_archs"])
    compiler, listed = built["zsm_tf_gpu_images"].split(";")
    assert compiler == f"nvrtc {nv.version_str}"
    kinds = [item.split(":")[:2] for item in listed.split(",")]
    assert [t for t, _ in kinds] == built["cuda_archs"]
    assert all((k == "cubin") == t.startswith("sm_") for t, k in kinds)
    # no CUDA library linked: the driver is opened at run time (here, without one: a clear error)
    needed = _needed(Path(built["library"]).read_bytes())
    assert "libtensorflow_framework.so.2" in needed
    assert not [n for n in needed if re.match(r"lib(cuda|cudart|nvrtc)\b", n)], needed
    assert built["zsm_tf_driver_error"] == "" or "libcuda.so.1" in built["zsm_tf_driver_error"]


def _needed(data: bytes) -> list[str]:
    """DT_NEEDED entries of an ELF64 shared library."""
    e_shoff, = struct.unpack_from("<Q", data, 40)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 58)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize)
                for i in range(e_shnum)]
    out = []
    for s in sections:
        if s[1] == 6:  # SHT_DYNAMIC
            strtab = sections[s[6]][4]
            for j in range(s[5] // 16):
                tag, val = struct.unpack_from("<qQ", data, s[4] + j * 16)
                if tag == 1:  # DT_NEEDED
                    out.append(data[strtab + val:data.index(b"\0", strtab + val)].decode())
    return out


def test_kernel_params_match_the_launches(built, images):
    """cuLaunchKernel checks nothing: what the op passes must be what each kernel declares."""
    host = host_params(built["zsm_tf_kernel_params"])
    assert sorted(host) == sorted(nvrtc.KERNELS)
    for t, im in images.items():
        dev = ptx_params(im.ptx)
        assert sorted(dev) == sorted(nvrtc.KERNELS), t
        for k in nvrtc.KERNELS:
            assert [s for s, _ in dev[k]] == [s for s, _ in host[k]], (t, k, dev[k], host[k])
            assert all(h >= d for (_, d), (_, h) in zip(dev[k], host[k])), (t, k)  # alignment


def test_image_choice_per_gpu(built):
    """Same-major cubin with the highest minor not above the GPU's, else the newest PTX not above
    it, else none."""
    targets = built["cuda_archs"]

    def expected(cc):
        major, minor = map(int, cc.split("."))
        sm = major * 10 + minor
        cub = [t for t in targets if t.startswith("sm_") and int(t[3:]) // 10 == major
               and int(t[3:]) % 10 <= minor]
        ptx = [t for t in targets if t.startswith("compute_") and int(t[8:]) <= sm]
        best = max(cub, key=lambda t: int(t[3:]), default=None) or \
            max(ptx, key=lambda t: int(t[8:]), default=None)
        return targets.index(best) if best else -1

    for cc, got in built["choices"].items():
        assert got == expected(cc), cc
    if targets == ["sm_60", "sm_70", "sm_80", "sm_89", "compute_90"]:  # TensorFlow 2.21's list
        named = {cc: targets[i] if i >= 0 else None for cc, i in built["choices"].items()}
        assert named["8.6"] == "sm_80" and named["8.9"] == "sm_89" and named["7.5"] == "sm_70"
        assert named["9.0"] == named["10.0"] == named["12.0"] == "compute_90"
        assert named["5.2"] is None and named["6.1"] == "sm_60"


def test_load_time_warnings_for_ptx_on_an_older_driver(built):
    """Before any launch, load() warns once per visible GPU that has no cubin and whose driver
    is older than the PTX (which would fail with error 222 mid-training), or that has no image."""
    old, new = built["warnings_old_driver"], built["warnings_new_driver"]
    ptx_gpus = [cc for cc, i in built["choices"].items()
                if i >= 0 and built["cuda_archs"][i].startswith("compute_")]
    none = [cc for cc, i in built["choices"].items() if i < 0]
    assert ptx_gpus and none  # the checked capabilities include both kinds
    assert len(old) == len(ptx_gpus) + len(none) and len(new) == len(none)
    assert all("CUDA error 222" in w and "12.4" in w for w in old if "PTX" in w)
    assert any("sm_120 GPU has no cubin" in w for w in old)
    assert all("have none for this" in w for w in new)


def test_cuda_plan_uses_nvrtc_and_links_no_cuda(nv, monkeypatch):
    monkeypatch.setenv("ZSM_TF_OP_CUDA", "1")
    monkeypatch.delenv("ZSM_TF_CUDA_ARCH", raising=False)
    monkeypatch.delenv("ZSM_TF_CUDA_COMPILER", raising=False)
    cuda, cpu = custom_op._plans(SRC)
    assert cuda.info["cuda_compiler"] == "nvrtc" and callable(cuda.prepare)
    (op_cmd, img_cmd, wino_cmd, fused_cmd, flow_cmd), (link,) = cuda.steps
    assert "-DZSM_WITH_CUDA" in op_cmd and "{tmp}/gpu_images.cc" in img_cmd
    assert "-DZSM_WITH_CUDA" not in wino_cmd and "{tmp}/wino.o" in link   # the CPU Winograd op
    assert "-DZSM_WITH_CUDA" not in fused_cmd and "{tmp}/fused.o" in link  # the CPU fused DCN
    assert "-DZSM_WITH_CUDA" not in flow_cmd and "{tmp}/flow.o" in link  # the midpoint
    assert "-Wl,--no-undefined" in link
    assert not [a for a in link if re.search(r"cuda|nvrtc", a)], link
    monkeypatch.setenv("ZSM_TF_CUDA_ARCH", "sm_86")  # other targets: another library
    cuda86 = custom_op._plans(SRC)[0]
    assert cuda86.info["cuda_archs"] == ["sm_86", "compute_86"] and cuda86.name != cuda.name
    monkeypatch.setenv("ZSM_TF_CUDA_ARCH", "sm_90a")
    assert "bad CUDA target" in custom_op._plans(SRC)[0].info["cuda_skipped"]
    monkeypatch.delenv("ZSM_TF_CUDA_ARCH")
    # another NVRTC version: another library (the version is in the cache key)
    other = custom_op.CudaCompiler("nvrtc", (nv.version[0], nv.version[1] + 1), nv.path, "test", nv)
    monkeypatch.setattr(custom_op, "find_cuda_compiler", lambda: (other, None))
    newer = custom_op._plans(SRC)[0]
    assert newer.name != cuda.name and newer.info["cuda_archs"] == cuda.info["cuda_archs"]
    assert newer.info["cuda_compiler_version"] == f"{nv.version[0]}.{nv.version[1] + 1}"


def test_the_same_source_compiles_with_nvcc(nv, tmp_path):
    """The second route (ZSM_TF_CUDA_COMPILER=nvcc): where any nvcc exists, the one kernel file
    compiles with ``nvcc -cubin`` / ``-ptx`` to the same kernels with the same parameters."""
    found = [p for p, _ in custom_op.nvcc_candidates() if custom_op.nvcc_version(p)]
    if not found:
        pytest.skip("no nvcc here")
    path = found[0]
    nvcc = custom_op.Nvcc(path, custom_op.nvcc_version(path), "test")
    real, virtual = custom_op._nvcc_supported(nvcc)
    targets = [t for t in ("sm_80", "compute_90") if t in real | virtual]
    if not targets:
        pytest.skip(f"nvcc {nvcc.version_str} compiles neither sm_80 nor compute_90")
    for im in custom_op._nvcc_images(nvcc, SRC, targets, str(tmp_path)):
        if im.cubin is not None:
            machine, flags, _, abi, sections, funcs = _elf(im.cubin)
            assert machine == 190 and _cubin_sm(flags, abi) == 80
            assert set(nvrtc.KERNELS) <= funcs
        else:  # nvcc's PTX declares what NVRTC's does
            ref = nv.compile(SRC / nvrtc.KERNEL_SOURCE, im.target, [str(SRC)]).ptx
            assert sorted(ptx_params(im.ptx)) == sorted(nvrtc.KERNELS)
            assert ptx_params(im.ptx) == ptx_params(ref)


# ---------------------------------------------------------------------------------------------
# The driver-API launch path (custom_ops/gpu_launch.h, as the op uses it) run end to end without a
# GPU: the standalone GPU-vs-CPU test built with -DZSM_DRIVER_LAUNCH launches the kernels through
# gpu_launch.h from NVRTC's images, against custom_ops/host_shim/fake_libcuda.cc as libcuda.so.1
# (which checks each image's ELF and SM, the current context, the launch shape, and runs the
# kernels serially on the CPU with their parameters read from cuLaunchKernel's void**).

SANITIZE = ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
REPORT = re.compile(r"fake driver: loaded (.+?) loads (\d+) launches (\d+) memsets (\d+) pushes "
                    r"(\d+) pops (\d+) bad_context (\d+) depth (\d+)")


@pytest.fixture(scope="module")
def driver_test(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("driver")
    (out / "gpu_images.cc").write_text(nvrtc.images_source(list(images.values()), "nvrtc 12.9",
                                                           (12, 9)))
    base = ["g++", "-std=c++17", "-O1", f"-I{SRC / 'host_shim'}", f"-I{SRC}"]

    def build(extra):  # three compiles at once, then the link
        cmds = [[*base, "-c", str(out / "gpu_images.cc"), "-o", str(out / "img.o")],
                [*base, *extra, "-shared", "-fPIC", "-fvisibility=hidden", "-x", "c++",
                 str(SRC / "host_shim" / "fake_libcuda.cc"), str(SRC / nvrtc.KERNEL_SOURCE),
                 "-o", str(out / "libcuda.so.1")],
                [*base, *extra, "-DZSM_DRIVER_LAUNCH", "-x", "c++", "-c",
                 str(SRC / "cuda_test" / "test_gpu_vs_cpu.cu"), "-o", str(out / "test.o")]]
        procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for c in cmds]
        logs = [p.communicate()[0] for p in procs]
        failed = [log for p, log in zip(procs, logs) if p.returncode]
        if not failed:
            link = subprocess.run([*base, *extra, str(out / "test.o"), str(out / "img.o"), "-o",
                                   str(out / "test"), "-ldl"], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
            failed = [link.stdout] if link.returncode else []
        return failed

    failed = build(SANITIZE)
    if failed:  # g++ without libasan/libubsan: the same test, unsanitized
        failed = build([])
    assert not failed, failed[0][-3000:]

    def run(*args, cc="8.6", driver="12090", libcuda=True):
        env = {**os.environ, "FAKE_CUDA_CC": cc, "FAKE_CUDA_DRIVER": driver}
        if libcuda:
            env["LD_LIBRARY_PATH"] = str(out)
        r = subprocess.run([str(out / "test"), *args], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=600)
        m = REPORT.search(r.stdout)
        return r, (m.groups() if m else None)

    return run


def test_driver_launch_path_matches_cpu_kernels(driver_test):
    r, report = driver_test()
    assert r.returncode == 0 and "all 16 cases match" in r.stdout, r.stdout[-3000:]
    assert "FAIL" not in r.stdout
    loaded, loads, launches, memsets, pushes, pops, bad_ctx, depth = report
    assert loaded == "cubin sm_80" and loads == "1"  # sm_86: the sm_80 cubin, loaded once
    assert int(launches) > 100 and int(memsets) > 0
    assert pushes == pops and int(pushes) > 0 and bad_ctx == "0" and depth == "0"


@pytest.mark.parametrize("cc,loaded", [("7.5", "cubin sm_70"), ("8.9", "cubin sm_89"),
                                       ("9.0", "cubin sm_90"), ("10.0", "cubin sm_100"),
                                       ("12.0", "ptx")])
def test_driver_loads_the_image_of_each_gpu(driver_test, images, cc, loaded):
    if loaded != "ptx" and loaded.split()[1] not in images:
        pytest.skip(f"{loaded} not compiled")
    r, report = driver_test("--load", cc=cc)
    assert r.returncode == 0 and "error: \nwarning: \n" in r.stdout, r.stdout
    assert report[0] == loaded and report[2] == "1" and report[6] == "0" and report[7] == "0"


def test_driver_errors_are_clear_messages(driver_test):
    r, report = driver_test("--load", cc="12.0", driver="12040")  # PTX newer than the driver
    assert r.returncode == 3, r.stdout
    assert "CUDA_ERROR_UNSUPPORTED_PTX_VERSION (222)" in r.stdout
    assert "update the NVIDIA driver" in r.stdout and "ZSM_TF_CUDA_ARCH=sm_120" in r.stdout
    assert "warning: zsm_tf: this sm_120 GPU has no cubin" in r.stdout  # logged once by the op
    assert report[7] == "0"  # the context is popped on the error path too
    r, report = driver_test("--load", cc="5.2")
    assert r.returncode == 3 and "no GPU image fits this sm_52 GPU" in r.stdout, r.stdout
    r, report = driver_test("--launch-error")
    assert r.returncode == 3, r.stdout
    assert ("launching zsm_im2col_forward_f32: CUDA_ERROR_ILLEGAL_ADDRESS (700): an illegal "
            "memory access was encountered") in r.stdout
    assert report[7] == "0"
    if custom_op.cuda_driver_version() is None:  # no NVIDIA driver here: a clear error
        r, _ = driver_test("--load", libcuda=False)
        assert r.returncode == 3 and "cannot load the CUDA driver libcuda.so.1" in r.stdout, \
            r.stdout


def test_gpu_check_script_parses_and_dry_runs():
    """bench/gpu_check.sh (run by a GPU owner; never run here): bash syntax, a dry run listing
    every step, and the flags it passes exist in the scripts it calls."""
    script = ROOT / "bench" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    out = subprocess.run([str(script), "--dry-run"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=60)
    assert out.returncode == 0, out.stdout
    rows = [ln for ln in out.stdout.splitlines() if re.match(r"^\d[ab]? .*\| DRY ", ln)]
    assert [r.split()[0] for r in rows] == ["0", "1a", "1b", "2", "3", "4", "5"]
    text = script.read_text()
    for src, flags in [("zsm_tf/commands/train.py", ["--strategy", "--steps", "--batch-size", "--lr-patch",
                                     "--val-clips", "--checkpoint-every", "--model",
                                     "--output-dir"]),
                       ("bench/deform_conv.py", ["--runs"]), ("bench/model.py", ["--runs"])]:
        code = (ROOT / src).read_text()
        for flag in flags:
            assert f'"{flag}"' in code, (src, flag)
    for target in ("driver-test", "cuda-test"):
        assert f"\n{target}:" in (SRC / "Makefile").read_text() and target in text
    assert "--strategy mirrored --steps 50" in text
