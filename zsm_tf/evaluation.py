"""The paper's evaluation protocol, as a library (``zsm-tf evaluate`` is its command line).

Each clip's high-resolution frames are the ground truth; the input is every other frame,
downscaled x4 with antialiased bicubic and saved as 8-bit (the training degradation,
:func:`zsm_tf.degradation.downscale_image`). The model's 2K-1
frames are scored against the 2K-1 ground-truth frames, beside the bicubic + frame-blending
baseline of :func:`zsm_tf.baseline.bicubic_blend` (the one validation and the residual model use).
PSNR / SSIM on Y (:mod:`zsm_tf.metrics`). :func:`vid4_clips` / :func:`vimeo_clips` list a
dataset's clips; :func:`evaluate_clip` scores one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zsm_tf.degradation import SCALE
from zsm_tf.io import MediaError, list_images, read_image


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
    clips = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    clips = [d for d in clips if list_images(d)]
    if not clips:
        raise MediaError(f"{root}: no clip folders with images (vid4 layout: DIR/<clip>/*.png)")
    return [(d.name, list_images(d)) for d in clips]


def vimeo_clips(root: Path, list_file=None):
    """``[(id, [im1.png .. im7.png])]`` of a Vimeo-90K test list (the one parser:
    :func:`zsm_tf.data.vimeo.read_list`); ``MediaError`` for a missing list or frame."""
    from zsm_tf.data.vimeo import read_list, septuplet_paths

    try:
        names = read_list(root, "test", list_file)
    except (OSError, ValueError) as e:
        raise MediaError(str(e)) from None
    clips = []
    for name, files in zip(names, septuplet_paths(root, names)):
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise MediaError(f"{files[0].parent}: missing {', '.join(missing)}")
        clips.append((name, files))
    return clips


def read_hr(files):
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
    from zsm_tf.degradation import downscale_image
    from zsm_tf.metrics import psnr_y, ssim_y

    lr = [downscale_image(f) for f in hr[::2]]
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
