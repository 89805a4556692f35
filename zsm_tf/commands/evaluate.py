"""zsm-tf evaluate --data DIR --layout vid4|vimeo: PSNR / SSIM on Y of the model and of a
bicubic + frame-blending baseline, per clip and on average.

Each clip's high-resolution frames are the ground truth. The input is made from them as in the
paper: every other frame (0, 2, 4...) is kept and downscaled x4 with antialiased bicubic (the
kernel of MATLAB's imresize; the degradation training uses, zsm_tf/degradation.py), saved as
8-bit. The model sees those K frames and gives 2K-1, compared with the 2K-1 ground-truth frames
(a clip with an even number of frames loses its last frame, which has no next input frame). The
baseline upscales each input frame x4 with bicubic and makes each missing frame as the average
of its two neighbours.

Layouts:
  vid4   DIR/<clip>/*.png (or any image type): one folder of HR frames per clip, sorted by name.
  vimeo  DIR/sequences/<a>/<b>/im1.png .. im7.png, clips listed in DIR/sep_testlist.txt
         (<a>/<b> per line; another list with --list): inputs im1, im3, im5, im7.

Metrics (see zsm_tf.metrics): Y of BT.601 in the 16..235 range (MATLAB rgb2ycbcr), PSNR and SSIM
(11x11 Gaussian window) after cropping --crop-border pixels from each side. A clip's score is the
mean over its frames; the average row is the mean over clips.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from zsm_tf.commands.common import (
    add_debug_arg,
    add_model_args,
    build_upscaler,
    check_model_args,
    options_named,
    parser_for,
    quiet_tf,
    run_command,
    weights_path,
)
from zsm_tf.loading import load_model

PROG = "zsm-tf evaluate"


def build_parser():
    p = parser_for(PROG, __doc__)
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--layout", required=True, choices=("vid4", "vimeo"), help="dataset layout")
    p.add_argument("--crop-border", type=int, default=0, help="pixels cropped off each side before "
                                                              "the metrics (default 0)")
    p.add_argument("--list", help="vimeo: list of clips (default DIR/sep_testlist.txt)")
    p.add_argument("--limit", type=int, help="evaluate only the first N clips")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    add_debug_arg(p)
    return p


def run(args) -> int:
    from tqdm import tqdm

    from zsm_tf.evaluation import average_of, evaluate_clip, format_table, read_hr, vid4_clips, vimeo_clips
    from zsm_tf.io import MediaError

    check_model_args(args)
    if args.crop_border < 0:
        raise ValueError(f"--crop-border must be >= 0, got {args.crop_border}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    root = Path(args.data)
    if not root.is_dir():
        raise MediaError(f"{root}: no such folder")
    quiet_tf()   # before the vimeo list is read (zsm_tf.data imports TensorFlow)
    clips = vid4_clips(root) if args.layout == "vid4" else vimeo_clips(root, args.list)
    if args.limit:
        clips = clips[:args.limit]
    model = load_model(weights_path(args), config=args.config)
    upscaler = build_upscaler(args, model)
    rows = []
    for name, files in tqdm(clips, desc="evaluate", unit="clip", disable=args.quiet or len(clips) < 2,
                            file=sys.stderr, dynamic_ncols=True):
        hr = read_hr(files)
        with options_named():
            rows.append((name, evaluate_clip(upscaler, hr, args.crop_border)))
    average = average_of(rows)
    print(f"{args.layout} ({root}), Y channel (BT.601), crop border {args.crop_border}, "
          f"{'self-ensemble, ' if args.self_ensemble else ''}{len(rows)} clip{'s' if len(rows) != 1 else ''}")
    print(format_table(rows, average))
    if args.json:
        data = {"layout": args.layout, "data": str(root), "crop_border": args.crop_border,
                "clips": {n: r for n, r in rows}, "average": average}
        try:
            Path(args.json).write_text(json.dumps(data, indent=1))
        except OSError as e:
            raise MediaError(f"{args.json}: cannot write ({e.strerror or e})") from None
    return 0


def main(argv=None) -> int:
    return run_command(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
