"""Peak memory of one upscaling window, measured in fresh processes, next to zsm_tf.memory's estimate.

    python bench/memory_model.py                       # the default cases (shipped weights)
    python bench/memory_model.py --case 320x180:4 --case 640x480:4:auto --budget 4G

Each case ``WxH:WINDOW[:TILE]`` (TILE: a number, ``HxW`` of a tile, ``auto`` or nothing for
whole frames) runs in its own Python process: load the model, upscale one window of generated
frames with :class:`zsm_tf.inference.SpaceTimeUpscaler`, report the process's peak RSS
(``ru_maxrss``). The constants of :mod:`zsm_tf.memory` (``BASE_BYTES``, ``K_LR``, ``K_HR``)
were fitted to such measurements (64x48 and 320x180, window 4, shipped weights: 0.82 and
1.64 GiB); this script is how to check them on another machine. Cases run one after the
other, never two at once.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CASES = ("64x48:4", "320x180:4", "320x180:7", "320x180:4:96")


def child(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from zsm_tf.inference import SpaceTimeUpscaler
    from zsm_tf.loading import load_model, shipped_weights
    from zsm_tf.memory import parse_size
    from zsm_tf.model import ZoomingSlowMo

    size, window, *tile = args.child.split(":")
    w, h = (int(v) for v in size.split("x"))
    tile = tile[0] if tile else None
    if tile and tile != "auto":
        tile = tuple(int(v) for v in tile.split("x")) if "x" in tile else int(tile)
    model = ZoomingSlowMo() if args.full_size else load_model(args.weights or shipped_weights())
    up = SpaceTimeUpscaler(model, window=int(window), tile=tile, precision=args.precision,
                           max_memory=parse_size(args.budget) if args.budget else None)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (int(window), h, w, 3), dtype=np.uint8)
    plan = up.plan(h, w)
    t0 = time.perf_counter()
    up.upscale_window(frames)
    dt = time.perf_counter() - t0
    print(json.dumps({"case": args.child, "plan": plan, "seconds": round(dt, 1),
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "estimate": up.estimated_peak(h, w)}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", action="append", help="WxH:WINDOW[:TILE] (repeatable)")
    p.add_argument("--weights", help="default: the shipped weights")
    p.add_argument("--full-size", action="store_true", help="the paper-size model, random weights")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--budget", help="--max-memory for auto tiles")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    rows = []
    for case in args.case or DEFAULT_CASES:
        cmd = [sys.executable, __file__, "--child", case, "--precision", args.precision]
        cmd += ["--weights", args.weights] if args.weights else []
        cmd += ["--full-size"] if args.full_size else []
        cmd += ["--budget", args.budget] if args.budget else []
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode:
            print(f"{case}: failed ({res.returncode}): {res.stderr.strip().splitlines()[-1:]}")
            continue
        row = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{case:>22}  tiles {str(row['plan']):>12}  peak RSS {row['peak_rss'] / 2**30:5.2f} GiB  "
              f"estimate {row['estimate'] / 2**30:5.2f} GiB  ({row['seconds']} s)", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    sys.exit(main())
