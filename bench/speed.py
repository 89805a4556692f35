"""How close `zsm-tf upscale` runs to this machine's own limit, measured in one run.

    python bench/speed.py                              # 9 frames of 320x180 -> 17 of 1280x720
    python bench/speed.py --size 640x360 --frames 5 --precision float32

Prints, all measured in this one process (and its child) on this machine:

* the CPU (model name and the flags that matter: AVX2, AVX-512, AVX512-BF16, AMX) and whether
  TensorFlow runs its oneDNN kernels;
* ``tf.matmul``'s rate (GFLOP/s, 4096^3, float32 and, when the model runs in it, bfloat16): the
  machine's limit for the arithmetic the network is made of;
* the model's FLOPs, counted from the layer shapes (every convolution, and the GEMM of every
  deformable convolution, as ``2 * output pixels * kh * kw * Cin * Cout``: the bilinear sampling,
  activations and the motion base's block matching are not counted) per stage of one window and
  per output frame of the whole job (:func:`zsm_tf.inference.window_schedule`: the frame two
  windows share is reconstructed once);
* each stage's time for one window at full size (wall and CPU seconds, median of ``--runs``), its
  GFLOP/s and its share of the matmul rate: features, frame interpolation, ConvLSTM, the
  reconstruction of one frame, the motion base;
* the whole command, ``zsm-tf upscale`` with its default flags in a fresh process on a generated
  clip (model loading, tracing and the first window included): wall and CPU seconds, seconds per
  output frame and its achieved GFLOP/s.

The machine is shared and noisy: CPU seconds are the steadier figure; pause other heavy jobs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def machine() -> str:
    from zsm_tf.precision import cpu_flags

    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = cpu_flags()
    have = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name}, {os.cpu_count()} CPUs, flags: {' '.join(have) or 'none of avx2/avx512/amx'}"


def timed(fn, runs):
    """(median wall s, median CPU s) of ``fn()`` after one warm-up call (which traces)."""
    fn()
    walls, cpus = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), cpu_seconds()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(cpu_seconds() - c0)
    return statistics.median(walls), statistics.median(cpus)


def matmul_rate(dtype, runs, n=4096):
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_uniform([n, n], seed=[1, 2]), dtype)
    mm = tf.function(lambda: tf.matmul(a, a))
    wall, cpu = timed(lambda: mm().numpy(), runs)
    return 2.0 * n ** 3 / wall / 1e9, 2.0 * n ** 3 / cpu / 1e9


# ------------------------------------------------------------------------------ FLOP counting
STAGES = ("features", "interpolation", "convlstm", "reconstruction")


def count_flops(model, window, height, width):
    """GFLOP per stage of one window of ``window`` frames at ``height x width`` (multiples of 4):
    ``{"features": ..., "interpolation": ..., "convlstm": ..., "reconstruction": per output
    frame}``. Counted on a small eager call (every conv's output and kernel shapes) and scaled
    by the pixel count: every layer's cost is proportional to it."""
    import keras
    import tensorflow as tf

    import zsm_tf.layers.deformable_conv as dcn_module

    h0, w0 = 32, 48
    counts = dict.fromkeys(STAGES, 0.0)
    stage = ["other"]
    undo = []

    def wrap_call(layer, before):
        inner = layer.call

        def call(*a, **k):
            out = inner(*a, **k)
            before(a, out)
            return out
        layer.call = call
        undo.append((layer, inner))

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Conv2D):
            def record(a, out, layer=layer):
                kh, kw, cin, cout = layer.kernel.shape
                px = float(tf.reduce_prod(tf.shape(out)[:3]))
                counts[stage[0]] = counts.get(stage[0], 0.0) + 2.0 * px * kh * kw * cin * cout
            wrap_call(layer, record)
    original = dcn_module.deform_conv2d_from_logits

    def recording(x, offset_mask, kernel, bias, **kw):
        kh, kw_, cin, cout = kernel.shape
        px = float(tf.reduce_prod(tf.shape(offset_mask)[:3]))
        counts[stage[0]] = counts.get(stage[0], 0.0) + 2.0 * px * kh * kw_ * cin * cout
        return original(x, offset_mask, kernel, bias, **kw)

    blocks = {"features": (model.feature_extractor, model.pyramid),
              "interpolation": (model.interpolation,), "convlstm": (model.convlstm,),
              "reconstruction": (model.reconstructor,)}
    for name, layers in blocks.items():
        for layer in layers:
            inner = layer.call

            def call(*a, _inner=inner, _name=name, **k):
                prev, stage[0] = stage[0], _name
                try:
                    return _inner(*a, **k)
                finally:
                    stage[0] = prev
            layer.call = call
            undo.append((layer, inner))
    dcn_module.deform_conv2d_from_logits = recording
    try:
        model(tf.zeros([1, window, h0, w0, 3]))   # eager: every RNN step is counted
    finally:
        dcn_module.deform_conv2d_from_logits = original
        for layer, inner in reversed(undo):
            layer.call = inner
    scale = height * width / (h0 * w0) / 1e9
    out = {k: counts[k] * scale for k in STAGES}
    out["reconstruction"] /= 2 * window - 1
    return out


# ------------------------------------------------------------------------------------ stages
def stage_times(model, window, height, width, runs, jit=False, winograd=0, fused_deform=False):
    """{stage: (wall s, CPU s)} for one window at full size (reconstruction: one frame;
    ``jit``: XLA-compiled, ``winograd``: the 3x3 convolutions' Winograd tile, ``fused_deform``:
    the fused deformable op, as the upscaler runs it)."""
    import tensorflow as tf

    from zsm_tf.baseline import interleave
    from zsm_tf.ops.winograd import scope

    def function(fn):   # traced inside the upscaler's Winograd scope
        def scoped(*a):
            with scope(winograd, fused_deform=fused_deform):
                return fn(*a)
        return tf.function(scoped)

    b, n, h, w, nf = 1, window, height, width, model.nf
    x = tf.random.stateless_uniform([b, n, h, w, 3], seed=[3, 4])
    dt = model.compute_dtype
    feats = function(lambda v: model.pyramid(model.feature_extractor(
        tf.reshape(tf.cast(v, dt), [b * n, h, w, 3]))))
    pyr = [tf.reshape(lv, tf.concat([[b, n], tf.shape(lv)[1:]], 0)) for lv in feats(x)]

    def pairs(lv, s):
        return tf.reshape(lv[:, s:n - 1 + s], tf.concat([[b * (n - 1)], tf.shape(lv)[2:]], 0))
    p0, p1 = [pairs(lv, 0) for lv in pyr], [pairs(lv, 1) for lv in pyr]
    interp = function(lambda a, c: model.interpolation(a, c))
    seq = interleave(pyr[0], tf.reshape(interp(p0, p1), [b, n - 1, h, w, nf]))
    lstm = function(lambda s: model.convlstm(s))
    one = tf.reshape(lstm(seq)[:, :1], [1, h, w, nf])
    recon = function(lambda f: model.reconstruct(f, jit=jit))
    fns = {"features": lambda: feats(x), "interpolation": lambda: interp(p0, p1),
           "convlstm": lambda: lstm(seq), "reconstruction": lambda: recon(one)}
    if model.residual == "motion":
        base = function(lambda v: model.motion_base(v))   # with the upscaler's compiled ops
        fns["motion base"] = lambda: base(x)
    return {k: timed(lambda f=f: tf.nest.map_structure(lambda t: t.numpy(), f()), runs)
            for k, f in fns.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="320x180", help="input WxH (default 320x180)")
    p.add_argument("--frames", type=int, default=9, help="input frames of the command's clip")
    p.add_argument("--precision", default="auto", help="float32 | bfloat16 | auto (the CLI default)")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--jit", default="auto", choices=("auto", "on", "off"),
                   help="XLA-compile the reconstruction (auto: as the CLI decides)")
    p.add_argument("--winograd", default="auto", choices=("auto", "0", "2", "4"),
                   help="Winograd tile of the 3x3 convolutions (auto: as the CLI decides; 0: off)")
    p.add_argument("--no-command", action="store_true", help="skip the whole-command run")
    args = p.parse_args(argv)
    import zsm_tf  # noqa: F401  (first: it turns oneDNN on before TensorFlow loads, as the CLI does)

    w, h = (int(v) for v in args.size.lower().split("x"))

    import tensorflow as tf

    from zsm_tf import precision as prec
    from zsm_tf.inference import pad_amounts, window_schedule
    from zsm_tf.loading import load_model, shipped_weights

    base_model = load_model(shipped_weights())
    settings = base_model.inference_settings   # the weights' record: what the CLI uses
    window = settings.default_window
    precision = prec.resolve(args.precision, settings.bf16_psnr_cost_db)
    model = prec.with_precision(base_model, precision)
    # the upscaler's Winograd convolutions and XLA-compiled reconstruction
    winograd = prec.resolve_winograd(args.winograd if args.winograd == "auto" else int(args.winograd),
                                     precision)
    jit = prec.resolve_jit({"on": True, "off": False}.get(args.jit, "auto"), precision, winograd)
    fused = prec.resolve_fused_deform()   # the fused deformable op (ZSM_TF_FUSED_DEFORM=0: off)
    hp, wp = h + pad_amounts(h, w)[0], w + pad_amounts(h, w)[1]

    from tensorflow.python.util import _pywrap_util_port

    print(f"machine: {machine()}")
    print(f"TensorFlow {tf.__version__}, oneDNN {'on' if _pywrap_util_port.IsMklEnabled() else 'off'}; "
          f"model {base_model.count_params():,} parameters, window {window}, {precision}"
          f"{', reconstruction XLA-compiled' if jit else ''}"
          f"{f', Winograd F({winograd}x{winograd}, 3x3) convolutions' if winograd else ''}"
          f"{', fused deformable op' if fused else ''}; "
          f"input {w}x{h} -> {4 * w}x{4 * h}")
    mm32, mm32_cpu = matmul_rate(tf.float32, args.runs)
    rates = {"float32": mm32}
    line = f"tf.matmul 4096^3: float32 {mm32:.0f} GFLOP/s ({mm32_cpu:.0f} per CPU-s)"
    if precision == "bfloat16":
        rates["bfloat16"], bf_cpu = matmul_rate(tf.bfloat16, args.runs)
        line += f", bfloat16 {rates['bfloat16']:.0f} GFLOP/s ({bf_cpu:.0f} per CPU-s)"
    print(line)
    limit = rates[precision]

    flops = count_flops(model, window, hp, wp)
    times = stage_times(model, window, hp, wp, args.runs, jit, winograd, fused)
    print(f"\n{'stage (one window)':<26}{'GFLOP':>8}{'wall s':>9}{'CPU s':>8}{'GFLOP/s':>9}{'of matmul':>10}")
    for k, (wall, cpu) in times.items():
        g = flops.get(k)
        label = k + (" (1 frame)" if k == "reconstruction" else "")
        rate = f"{g / wall:9.0f}{g / wall / limit:10.0%}" if g else f"{'-':>9}{'-':>10}"
        print(f"{label:<26}{(f'{g:.1f}' if g else '-'):>8}{wall:9.2f}{cpu:8.2f}{rate}")
    # the model part of one whole window as the upscaler runs it (2N-1 frames reconstructed)
    t_out = 2 * window - 1
    model_g = sum(flops[k] for k in STAGES[:3]) + t_out * flops["reconstruction"]
    model_wall = sum(times[k][0] for k in STAGES[:3]) + t_out * times["reconstruction"][0]
    model_cpu = sum(times[k][1] for k in STAGES[:3]) + t_out * times["reconstruction"][1]
    print(f"{'model, one window':<26}{model_g:8.1f}{model_wall:9.2f}{model_cpu:8.2f}"
          f"{model_g / model_wall:9.0f}{model_g / model_wall / limit:10.0%}")
    if "motion base" in times:
        mb = times["motion base"][0]
        print(f"model + motion base: {(model_g / (model_wall + mb)) / limit:.0%} of the matmul rate")

    schedule = window_schedule(args.frames, window)
    outputs = 2 * args.frames - 1
    job_g = sum(sum(flops[k] for k in STAGES[:3]) * min(window, args.frames - s) / window
                + (2 * min(window, args.frames - s) - 1 - f) * flops["reconstruction"]
                for s, f in schedule)
    print(f"\njob: {args.frames} frames -> {outputs}, {len(schedule)} model calls {schedule}: "
          f"{job_g:.0f} GFLOP, {job_g / outputs:.1f} GFLOP per output frame")
    result = {"machine": machine(), "precision": precision, "matmul_gflops": rates,
              "flops_gflop": flops, "stages": times, "job_gflop": job_g}
    if not args.no_command:
        from upscale import make_clip, run_cli

        with tempfile.TemporaryDirectory(prefix="zsm_speed_") as tmp:
            clip = Path(tmp) / "in.mkv"
            make_clip(clip, args.frames, w, h)
            extra = [] if args.precision == "auto" else ["--precision", args.precision]
            r = run_cli(ROOT, clip, Path(tmp) / "out.mp4", extra)
        if r.get("error"):
            print(f"command failed: {r['error']}")
        else:
            print(f"zsm-tf upscale (default flags, fresh process): wall {r['wall_s']:.1f} s, "
                  f"CPU {r['cpu_s']:.1f} s; {r['wall_s'] / outputs:.2f} s and "
                  f"{r['cpu_s'] / outputs:.2f} CPU-s per output frame; "
                  f"{job_g / r['wall_s']:.0f} GFLOP/s = {job_g / r['wall_s'] / limit:.0%} of matmul "
                  f"(start-up, tracing, decode and encode included)")
            result["command"] = r
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
