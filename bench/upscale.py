"""Benchmark of clip upscaling: seconds per output frame and peak memory.

    python bench/upscale.py                      # 320x180 -> 1280x720, the shipped weights
    python bench/upscale.py --full-size          # the default (paper-size) model, random weights
    python bench/upscale.py --frames 7 --window 7 --tile 96 --weights W.weights.h5

Runs :class:`zsm_tf.inference.SpaceTimeUpscaler` (the code behind ``zsm-tf upscale``) on K
generated frames (a textured picture panning), after one warm-up window (tf.function trace and
first-call allocations, timed apart). Reports the steady seconds per output frame, the warm-up
time and the process's peak RSS (``ru_maxrss``: the peak of the whole process, TensorFlow
included). Weights: --weights, else the shipped ``zsm_tf/weights/``, else (or with
--full-size) the default architecture with random weights (speed and memory do not depend on the
values; said in the output). Prints one JSON line at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def frames(k, w, h, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + k + 1, 3)).astype(np.uint8)
    from PIL import Image

    big = np.asarray(Image.fromarray(small).resize((small.shape[1] * 8, small.shape[0] * 8), Image.BICUBIC))
    for i in range(k):
        yield np.ascontiguousarray(big[:h, 3 * i:3 * i + w])


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="320x180", help="input WxH (default 320x180 -> 1280x720)")
    p.add_argument("--frames", type=int, default=4, help="input frames K (2K-1 outputs; default 4)")
    p.add_argument("--window", type=int, default=4, help="input frames per model call (default 4)")
    p.add_argument("--tile", type=int, help="tile size in input pixels (default: whole frames)")
    p.add_argument("--tile-overlap", type=int)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--self-ensemble", action="store_true")
    p.add_argument("--weights", help=".weights.h5 (default: shipped weights, else random)")
    p.add_argument("--config", help="JSON of ZoomingSlowMo arguments (default: beside the weights)")
    p.add_argument("--full-size", action="store_true",
                   help="time the default (paper-size) architecture with random weights")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from zsm_tf import upscale
    from zsm_tf.inference import SpaceTimeUpscaler
    from zsm_tf.model import ZoomingSlowMo

    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    weights_note = None
    try:
        if args.full_size:
            raise upscale.ModelLoadError("--full-size")
        model = upscale.load_model(args.weights, args.config)
        weights_note = str(args.weights or upscale.default_weights())
    except upscale.ModelLoadError as e:
        if args.weights:
            sys.exit(f"bench: {e}")
        cfg = json.loads(Path(args.config).read_text()) if args.config else {}
        model = ZoomingSlowMo.from_config(cfg) if cfg else ZoomingSlowMo()
        weights_note = ("random" + ("" if args.full_size else " (no shipped weights)")
                        + ": timings and memory only")
    t_load = time.perf_counter() - t0
    upscaler = SpaceTimeUpscaler(model, window=args.window, tile=args.tile, overlap=args.tile_overlap,
                                 self_ensemble=args.self_ensemble, batch=args.batch)
    n_in = min(args.window, args.frames)
    clip = list(frames(args.frames, w, h))
    t0 = time.perf_counter()
    upscaler.upscale_window(np.stack(clip[:n_in]))   # warm-up: trace + first allocations
    t_warm = time.perf_counter() - t0
    rss_warm = peak_rss_mb()
    t0 = time.perf_counter()
    n_out = 0
    for out in upscaler.stream(iter(clip)):
        assert out.shape == (4 * h, 4 * w, 3)
        n_out += 1
    t_run = time.perf_counter() - t0
    res = {
        "input": f"{w}x{h}", "output": f"{4 * w}x{4 * h}", "frames_in": args.frames, "frames_out": n_out,
        "window": args.window, "tile": args.tile, "self_ensemble": args.self_ensemble, "batch": args.batch,
        "params": int(model.count_params()), "config": {k: model.get_config()[k] for k in
                                                        ("nf", "groups", "front_rbs", "back_rbs", "deform_impl", "residual")},
        "deform_impl_used": "custom_op" if getattr(model, "uses_custom_op", False) else "gather",
        "weights": weights_note,
        "s_per_output_frame": round(t_run / n_out, 3), "output_fps": round(n_out / t_run, 3),
        "warmup_window_s": round(t_warm, 2), "model_load_s": round(t_load, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1), "rss_after_import_mb": round(rss0, 1),
        "peak_rss_after_warmup_mb": round(rss_warm, 1),
        "device": "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)",
        "tf": tf.__version__, "machine": platform.machine(),
    }
    print(f"{res['input']} -> {res['output']}, {args.frames} -> {n_out} frames, window {args.window}, "
          f"tile {args.tile}, weights: {weights_note}")
    print(f"  {res['s_per_output_frame']:.2f} s per output frame ({res['output_fps']:.3f} frames/s) on "
          f"{res['device']}; warm-up window {t_warm:.1f} s; peak RSS {res['peak_rss_mb']:.0f} MB")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
