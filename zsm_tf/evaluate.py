"""zsm-tf evaluate --data DIR --layout vid4|vimeo: PSNR / SSIM on Y of the model and of a
bicubic + frame-blending baseline, per clip and on average.

Each clip's high-resolution frames are the ground truth. The input is made from them as in the
paper: every other frame (0, 2, 4...) is kept and downscaled x4 with antialiased bicubic
(Pillow's, the kernel of MATLAB's imresize), saved as 8-bit. The model sees those K frames and
gives 2K-1, compared with the 2K-1 ground-truth frames (a clip with an even number of frames loses
its last frame, which has no next input frame). The baseline upscales each input frame x4 with
bicubic and makes each missing frame as the average of its two neighbours.

Layouts:
  vid4   DIR/<clip>/*.png (or any image type): one folder of HR frames per clip, sorted by name.
  vimeo  DIR/sequences/<a>/<b>/im1.png .. im7.png, clips listed in DIR/sep_testlist.txt
         (<a>/<b> per line; another list with --list): inputs im1, im3, im5, im7.

Metrics (see zsm_tf.metrics): Y of BT.601 in the 16..235 range (MATLAB rgb2ycbcr), PSNR and SSIM
(11x11 Gaussian window) after cropping --crop-border pixels from each side. A clip's score is the
mean over its frames; the average row is the mean over clips.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from zsm_tf.upscale import (
    ModelLoadError,
    add_model_args,
    build_upscaler,
    check_model_args,
    load_model,
    quiet_tf,
)

PROG = "zsm-tf evaluate"
SCALE = 4


def downscale(img: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """Antialiased bicubic downscale of uint8 ``[H, W, 3]`` (H, W multiples of ``scale``)."""
    from PIL import Image

    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((w // scale, h // scale), Image.BICUBIC))


def mod_crop(img: np.ndarray, scale: int = SCALE) -> np.ndarray:
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale]


def baseline_frames(lr_frames):
    """The baseline of :func:`zsm_tf.baseline.bicubic_blend` (the one validation and the residual
    model use) as uint8 frames: the 2K-1 frames of K uint8 ``[h, w, 3]`` inputs, one pair at a
    time (each frame is upscaled twice, but only two are in memory)."""
    from zsm_tf.baseline import bicubic_blend
    from zsm_tf.inference import to_uint8

    def blend(frames):  # uint8 [k, h, w, 3] -> 2k-1 uint8 frames
        return [to_uint8(f) for f in bicubic_blend(np.stack(frames)[None] / np.float32(255),
                                                   SCALE).numpy()[0]]

    prev = None
    for i, f in enumerate(lr_frames):
        if prev is None:
            prev = f
            continue
        out = blend([prev, f])
        yield from out if i == 1 else out[1:]
        prev = f
    if prev is not None and i == 0:
        yield from blend([prev])


# ------------------------------------------------------------------------------------- datasets


def vid4_clips(root: Path):
    from zsm_tf.video_io import MediaError, list_images

    clips = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    clips = [d for d in clips if list_images(d)]
    if not clips:
        raise MediaError(f"{root}: no clip folders with images (vid4 layout: DIR/<clip>/*.png)")
    return [(d.name, list_images(d)) for d in clips]


def vimeo_clips(root: Path, list_file=None):
    from zsm_tf.video_io import MediaError

    lst = Path(list_file) if list_file else root / "sep_testlist.txt"
    if not lst.is_file():
        raise MediaError(f"{lst}: no such list file (vimeo layout: DIR/sep_testlist.txt and DIR/sequences/)")
    names = [ln.strip() for ln in lst.read_text().splitlines() if ln.strip()]
    if not names:
        raise MediaError(f"{lst}: empty list")
    clips = []
    for name in names:
        d = root / "sequences" / name
        files = [d / f"im{i}.png" for i in range(1, 8)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise MediaError(f"{d}: missing {', '.join(missing)}")
        clips.append((name, files))
    return clips


def read_hr(files):
    from zsm_tf.video_io import MediaError, read_image

    frames = [mod_crop(read_image(f)) for f in files]
    if len(frames) < 3:
        raise MediaError(f"{Path(files[0]).parent}: {len(frames)} frames; need at least 3")
    if min(frames[0].shape[:2]) < 4 * SCALE:
        raise MediaError(f"{Path(files[0]).parent}: frames too small "
                         f"({frames[0].shape[1]}x{frames[0].shape[0]})")
    for f, a in zip(files, frames):
        if a.shape != frames[0].shape:
            raise MediaError(f"{f}: {a.shape[1]}x{a.shape[0]}, but the clip's first frame is "
                             f"{frames[0].shape[1]}x{frames[0].shape[0]}")
    if len(frames) % 2 == 0:
        frames = frames[:-1]
    return frames


# ------------------------------------------------------------------------------------- evaluate


def evaluate_clip(upscaler, hr, crop_border=0):
    """{'frames', 'model': (psnr, ssim), 'baseline': (psnr, ssim)} for one clip (HR uint8 frames)."""
    from zsm_tf.metrics import psnr_y, ssim_y

    lr = [downscale(f) for f in hr[::2]]
    scores = {"model": [], "baseline": []}
    model_out = upscaler.stream(iter(lr))
    for gt, out, base in zip(hr, model_out, baseline_frames(lr)):
        scores["model"].append((psnr_y(out, gt, crop_border), ssim_y(out, gt, crop_border)))
        scores["baseline"].append((psnr_y(base, gt, crop_border), ssim_y(base, gt, crop_border)))
    res = {"frames": len(hr)}
    for k, v in scores.items():
        a = np.asarray(v, np.float64)
        res[k] = (float(a[:, 0].mean()), float(a[:, 1].mean()))
        # the new (interpolated) frames alone: odd output indices
        res[f"{k}_new"] = (float(a[1::2, 0].mean()), float(a[1::2, 1].mean()))
    return res


def format_table(rows, average) -> str:
    """Per-clip rows and the average: all frames, then the new (interpolated) frames alone."""
    width = max([len("clip"), len("average")] + [len(name) for name, _ in rows])
    head = (f"{'clip':<{width}}  {'frames':>6}  {'bicubic+blend PSNR':>18}  {'SSIM':>6}  "
            f"{'model PSNR':>10}  {'SSIM':>6}  {'new frames: blend':>17}  {'model':>6}")
    lines = [head, "-" * len(head)]

    def line(name, r):
        return (f"{name:<{width}}  {r['frames']:>6}  {r['baseline'][0]:>18.2f}  {r['baseline'][1]:>6.4f}  "
                f"{r['model'][0]:>10.2f}  {r['model'][1]:>6.4f}  {r['baseline_new'][0]:>17.2f}  "
                f"{r['model_new'][0]:>6.2f}")
    lines += [line(name, r) for name, r in rows]
    lines += ["-" * len(head), line("average", average)]
    return "\n".join(lines)


def average_of(rows):
    return {"frames": sum(r["frames"] for _, r in rows),
            **{k: tuple(float(np.mean([r[k][i] for _, r in rows])) for i in range(2))
               for k in ("model", "baseline", "model_new", "baseline_new")}}


def _parser():
    doc = __doc__
    p = argparse.ArgumentParser(prog=PROG, description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(doc.split("\n\n")[1:]))
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--layout", required=True, choices=("vid4", "vimeo"), help="dataset layout")
    p.add_argument("--crop-border", type=int, default=0, help="pixels cropped off each side before "
                                                              "the metrics (default 0)")
    p.add_argument("--list", help="vimeo: list of clips (default DIR/sep_testlist.txt)")
    p.add_argument("--limit", type=int, help="evaluate only the first N clips")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    return p


def run(args) -> int:
    from tqdm import tqdm

    from zsm_tf.video_io import MediaError

    check_model_args(args)
    if args.crop_border < 0:
        raise ValueError(f"--crop-border must be >= 0, got {args.crop_border}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    root = Path(args.data)
    if not root.is_dir():
        raise MediaError(f"{root}: no such folder")
    clips = vid4_clips(root) if args.layout == "vid4" else vimeo_clips(root, args.list)
    if args.limit:
        clips = clips[:args.limit]
    quiet_tf()
    model = load_model(args.weights, args.config)
    upscaler = build_upscaler(args, model)
    rows = []
    for name, files in tqdm(clips, desc="evaluate", unit="clip", disable=args.quiet or len(clips) < 2,
                            file=sys.stderr, dynamic_ncols=True):
        hr = read_hr(files)
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
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    from zsm_tf.video_io import MediaError

    try:
        return run(args)
    except (MediaError, ModelLoadError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("ZSM_TF_DEBUG"):
            raise
        msg = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"{PROG}: error: unexpected {type(e).__name__}: {msg} (set ZSM_TF_DEBUG=1 for the traceback)",
              file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
