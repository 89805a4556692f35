"""Quality on real clips: the model against what a user gets for free.

Protocol (each clip): its first ``--frames`` frames (from ``start``) are the ground truth; the
input is every other frame shrunk x4 (antialiased bicubic, 8-bit). Each method gives all the
frames back at full size; PSNR-Y and SSIM-Y (BT.601, zsm_tf.metrics) on all / kept / new frames.

Methods:
  bicubic+blend  bicubic x4 of each input frame, new frames the average of their neighbours;
  ffmpeg         FFmpeg's motion-compensated interpolation then Lanczos x4:
                 ``minterpolate=fps=2F:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1,
                 scale=iw*4:ih*4:flags=lanczos`` (skipped, with a note, when no ``ffmpeg`` binary
                 is on PATH; ``--ffmpeg-order scale-first`` scales first, as in issue 14);
  motion base    bicubic x4, new frames motion-compensated (zsm_tf.ops.flow): the untrained base of
                 ``ZoomingSlowMo(residual="motion")``;
  model          the model (default: the shipped weights) through SpaceTimeUpscaler with the
                 window the weights were trained with (model_config.json; 4), as `zsm-tf upscale`.

    python bench/quality.py [--clips again.mkv bottle-detection.mp4@500 ...] [--frames 41]
                            [--weights W] [--methods blend,ffmpeg,motion,model] [--crop 320x240]

A clip is ``NAME[@START]`` in ``--videos`` (default ../shared/videos), or ``synth/NAME[@WxH]``: a
fast camera pan / zoom / moving object made on the fly from real frames (bench/fastmotion.py, not
seen in training; ``--crop`` does not apply). Default: HELD_OUT + FAST.
README's table: ``--frames 21 --crop 320x240`` (CPU time).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from itertools import islice
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's zsm_tf, not an installed one
sys.path.insert(0, str(ROOT / "bench"))
from heldout import DEFAULT_VIDEOS, HELD_OUT  # noqa: E402  (the one held-out list)

# fast motion (objects on a moving line; people walking at 10 fps): the stretches with the most
# frame-to-frame change. The shipped weights were trained on these files (all frames), so they
# test the untrained motion base and FFmpeg fairly, the model's learned correction less so.
FAST = ("one-by-one-person-detection.mp4@420", "bottle-detection.mp4@500")
METHODS = ("blend", "ffmpeg", "motion", "model")
LABELS = {"blend": "bicubic+blend", "ffmpeg": "ffmpeg mci+lanczos", "motion": "motion base",
          "model": "model"}
FFMPEG_MCI = "minterpolate=fps={fps}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1"
LANCZOS = "scale=iw*4:ih*4:flags=lanczos"


def read_clip(videos, spec, frames, crop=None):
    """HR uint8 frames of ``NAME[@START]``: ``frames`` of them (odd), centre-cropped to
    ``crop = (w, h)`` if given, then to multiples of 4."""
    from zsm_tf.evaluation import mod_crop
    from zsm_tf.io import open_source

    if spec.startswith("synth/"):  # a fast-motion clip made on the fly (bench/fastmotion.py)
        from fastmotion import read_synth

        return [mod_crop(f) for f in read_synth(videos, spec, frames)]
    name, _, start = spec.partition("@")
    with open_source(Path(videos) / name) as src:
        hr = list(islice(iter(src), int(start or 0), int(start or 0) + frames))
    if len(hr) % 2 == 0:
        hr = hr[:-1]
    if crop:
        w, h = crop
        y0 = max(0, (hr[0].shape[0] - h) // 2)
        x0 = max(0, (hr[0].shape[1] - w) // 2)
        hr = [f[y0:y0 + h, x0:x0 + w] for f in hr]
    return [mod_crop(f) for f in hr]


def ffmpeg_frames(lr, order="interpolate-first", pad=2):
    """FFmpeg mci interpolation x2 in time + Lanczos x4 of uint8 LR frames: 2K-1 uint8 frames
    (None when there is no ffmpeg binary).

    minterpolate looks a frame behind and ahead: on its own it repeats the first frame instead of
    interpolating the first new one and stops two frames early (2K-3 frames). The clip is padded
    with ``pad`` reflected frames at each end (as a longer clip would have) and the outputs of the
    real frames are kept: output 2i is input i, 2i+1 the frame between inputs i and i+1."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    h, w = lr[0].shape[:2]
    k = len(lr)
    pad = min(pad, k - 1)
    seq = [lr[i] for i in range(pad, 0, -1)] + list(lr) + [lr[k - 1 - i] for i in range(1, pad + 1)]
    chain = [FFMPEG_MCI.format(fps=2 * 15), LANCZOS]
    if order == "scale-first":
        chain.reverse()
    with tempfile.TemporaryDirectory() as tmp:
        from PIL import Image

        for i, f in enumerate(seq):
            Image.fromarray(f).save(Path(tmp) / f"{i:05d}.png")
        cmd = [exe, "-v", "error", "-framerate", "15", "-i", str(Path(tmp) / "%05d.png"),
               "-vf", ",".join(chain), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    out = np.frombuffer(raw, np.uint8).reshape(-1, 4 * h, 4 * w, 3)
    n = 2 * k - 1
    if len(out) < 2 * pad + n:
        raise RuntimeError(f"ffmpeg gave {len(out)} frames for {len(seq)}, expected at least "
                           f"{2 * pad + n}")
    return list(out[2 * pad:2 * pad + n])


class MotionBase:
    """The untrained base of ``ZoomingSlowMo(residual="motion")`` as a model-like callable."""

    def __init__(self):
        import tensorflow as tf

        from zsm_tf.model import ZoomingSlowMo

        self.fn = tf.function(ZoomingSlowMo.motion_base)

    def __call__(self, frames):
        return self.fn(frames)


def scores(outputs, hr):
    """{'all'|'kept'|'new': (PSNR-Y, SSIM-Y)} of a method's frames against the truth."""
    from zsm_tf.metrics import psnr_y, ssim_y

    a = np.asarray([(psnr_y(o, g), ssim_y(o, g)) for o, g in zip(outputs, hr)], np.float64)
    if len(a) != len(hr):
        raise RuntimeError(f"{len(a)} output frames for {len(hr)} ground-truth frames")
    return {"all": tuple(a.mean(0)), "kept": tuple(a[0::2].mean(0)), "new": tuple(a[1::2].mean(0))}


def evaluate(hr, methods, model=None, ffmpeg_order="interpolate-first", window=None):
    """{method: scores} for one clip's HR frames (None for ffmpeg without a binary). ``window``:
    input frames per model call (default: the model's training window, as the CLI)."""
    from zsm_tf.degradation import downscale_image as downscale
    from zsm_tf.evaluation import baseline_frames
    from zsm_tf.inference import SpaceTimeUpscaler
    from zsm_tf.run_dir import settings_of

    window = window or settings_of(model).default_window

    lr = [downscale(f) for f in hr[::2]]
    res = {}
    for m in methods:
        if m == "blend":
            out = list(baseline_frames(lr))
        elif m == "ffmpeg":
            out = ffmpeg_frames(lr, ffmpeg_order)
            if out is None:
                res[m] = None
                continue
        elif m == "motion":
            out = list(SpaceTimeUpscaler(MotionBase(), window=window).stream(iter(lr)))
        else:
            out = list(SpaceTimeUpscaler(model, window=window).stream(iter(lr)))
        res[m] = scores(out, hr)
    return res


def format_rows(rows, methods):
    head = f"{'clip':<34} {'LR size':>8}  " + "  ".join(
        f"{LABELS[m] + ' all/kept/new PSNR | SSIM all':<44}" for m in methods)
    lines = [head, "-" * len(head)]
    for name, size, res in rows:
        cells = []
        for m in methods:
            r = res.get(m)
            cells.append(f"{'(no ffmpeg on PATH)':<44}" if r is None else
                         f"{r['all'][0]:6.2f} / {r['kept'][0]:6.2f} / {r['new'][0]:6.2f} | "
                         f"{r['all'][1]:.4f}{'':<14}")
        lines.append(f"{name:<34} {size:>8}  " + "  ".join(cells))
    avg = {}
    for m in methods:
        vals = [res[m] for _, _, res in rows if res.get(m) is not None]
        avg[m] = None if not vals else {k: tuple(np.mean([v[k][i] for v in vals]) for i in range(2))
                                        for k in ("all", "kept", "new")}
    lines += ["-" * len(head), format_rows_avg(avg, methods)]
    return "\n".join(lines), avg


def format_rows_avg(avg, methods):
    cells = []
    for m in methods:
        r = avg[m]
        cells.append(f"{'-':<44}" if r is None else
                     f"{r['all'][0]:6.2f} / {r['kept'][0]:6.2f} / {r['new'][0]:6.2f} | "
                     f"{r['all'][1]:.4f}{'':<14}")
    return f"{'average':<34} {'':>8}  " + "  ".join(cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", default=list(HELD_OUT) + list(FAST),
                        help="NAME[@START] in --videos (default: HELD_OUT + FAST)")
    parser.add_argument("--frames", type=int, default=41, help="HR frames per clip (odd)")
    parser.add_argument("--weights", help="a .weights.h5 or a training run dir (default: the "
                                          "shipped weights)")
    parser.add_argument("--videos", default=str(DEFAULT_VIDEOS))
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--crop", help="WxH: centre crop of each clip (HR pixels)")
    parser.add_argument("--ffmpeg-order", default="interpolate-first",
                        choices=("interpolate-first", "scale-first"))
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        parser.error(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    crop = tuple(int(v) for v in args.crop.lower().split("x")) if args.crop else None

    from zsm_tf.quiet import quiet_tf

    quiet_tf()
    model = None
    if "model" in methods:
        from zsm_tf.loading import load_model, shipped_weights

        model = load_model(args.weights or shipped_weights())
        print(f"model: {args.weights or shipped_weights()} (residual={model.residual})",
              file=sys.stderr)
    if "ffmpeg" in methods and shutil.which("ffmpeg") is None:
        print("note: no ffmpeg binary on PATH, FFmpeg column skipped (apt-get install ffmpeg)",
              file=sys.stderr)
    rows = []
    for spec in args.clips:
        hr = read_clip(args.videos, spec, args.frames, crop)
        lr_size = f"{hr[0].shape[1] // 4}x{hr[0].shape[0] // 4}"
        rows.append((spec, lr_size, evaluate(hr, methods, model, args.ffmpeg_order)))
        print(format_rows(rows[-1:], methods)[0].splitlines()[-3], file=sys.stderr, flush=True)
    table, avg = format_rows(rows, methods)
    print(table)
    for m in ("motion", "model"):
        if m in methods and "ffmpeg" in methods and avg["ffmpeg"] is not None:
            wins = sum(res[m]["all"][0] > res["ffmpeg"]["all"][0] for _, _, res in rows)
            print(f"{LABELS[m]} - ffmpeg: {avg[m]['all'][0] - avg['ffmpeg']['all'][0]:+.2f} dB "
                  f"all frames, {avg[m]['new'][0] - avg['ffmpeg']['new'][0]:+.2f} dB new frames; "
                  f"beats it on {wins}/{len(rows)} clips (all frames)")
    return rows, avg


if __name__ == "__main__":
    main()
