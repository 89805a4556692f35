"""Held-out quality of the shipped weights on real clips they never saw in training.

Each clip's first frames are the ground truth: shrink x4 (antialiased bicubic), drop every other
frame, upscale with the model, compare with the originals (PSNR/SSIM on Y, BT.601). Baseline:
bicubic x4 + frame blending. Prints per-clip rows, the average, and the gap on all frames and on
the new (interpolated) frames alone.

    python bench/heldout.py [--frames 13] [--weights W] [--videos ../shared/videos]
    python bench/heldout.py --frames 9 --window 4 --precision bfloat16
"""
from __future__ import annotations

import argparse
from itertools import islice
from pathlib import Path

# The clips of ../shared/videos the shipped weights never saw: the training configs
# (configs/shipped.yaml, configs/motion.yaml, configs/realclips.yaml) leave them out with
# data.exclude, and tests/test_shipped_weights.py fails if a config's training set holds one.
HELD_OUT = ("again.mkv", "night.mkv", "thanks.mkv", "yes.mkv", "realshort.mp4")
DEFAULT_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "videos"


def heldout_scores(model, videos=DEFAULT_VIDEOS, frames=13, window=None, clips=HELD_OUT,
                   precision="float32"):
    """[(clip name, evaluate_clip result)] and their average, for the first ``frames`` frames
    (``window`` None: the model's training window, from its record)."""
    from zsm_tf.evaluation import average_of, evaluate_clip, mod_crop
    from zsm_tf.inference import SpaceTimeUpscaler
    from zsm_tf.io import open_source

    upscaler = SpaceTimeUpscaler(model, window=window, precision=precision)
    rows = []
    for name in clips:
        with open_source(Path(videos) / name) as src:
            hr = [mod_crop(f) for f in islice(iter(src), frames)]
        rows.append((name, evaluate_clip(upscaler, hr)))
    return rows, average_of(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=13, help="HR frames per clip (odd)")
    parser.add_argument("--weights", help="a .weights.h5 or a training run dir (default: the "
                                          "shipped weights)")
    parser.add_argument("--videos", default=str(DEFAULT_VIDEOS))
    parser.add_argument("--window", type=int,
                        help="input frames per model call (default: the weights' training window, "
                             "from their record, as zsm-tf upscale)")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--json", help="also write the per-clip numbers to this file")
    args = parser.parse_args()

    from zsm_tf.evaluation import format_table
    from zsm_tf.loading import load_model, shipped_weights
    from zsm_tf.run_dir import settings_of

    model = load_model(args.weights or shipped_weights())
    args.window = args.window or settings_of(model).default_window
    rows, avg = heldout_scores(model, args.videos, args.frames, window=args.window,
                               precision=args.precision)
    print(f"window {args.window}, {args.precision}, first {args.frames} frames")
    print(format_table(rows, avg))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"window": args.window, "precision": args.precision,
                                               "frames": args.frames, "rows": rows,
                                               "average": avg}, indent=1))
    gap = avg["model"][0] - avg["baseline"][0]
    gap_new = avg["model_new"][0] - avg["baseline_new"][0]
    print(f"\nPSNR-Y gap, model - (bicubic + blending): {gap:+.2f} dB on all frames, "
          f"{gap_new:+.2f} dB on the new (interpolated) frames")


if __name__ == "__main__":
    main()
