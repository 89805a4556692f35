"""Training data: generated clips, Vimeo-90K septuplets, folders of videos.

``make_source(spec, ...)`` turns a ``--data`` value into a source:

* ``synthetic`` (default): the built-in generated data set (:mod:`zsm_tf.data.synthetic`);
  ``synthetic:N`` a fixed set of N generated clips;
* ``vimeo:DIR``: Vimeo-90K septuplets (:mod:`zsm_tf.data.vimeo`);
* ``videos:DIR``: every video file under DIR, decoded with PyAV (:mod:`zsm_tf.data.video_clips`).

:mod:`zsm_tf.data.pipeline` builds the resumable, shardable ``tf.data`` pipelines from a source.
"""
from __future__ import annotations

from zsm_tf.data.augment import apply_ops, augment_pair
from zsm_tf.data.pipeline import downscale, fixed_batch, index_stream, make_pair, shard_stream, train_dataset
from zsm_tf.data.synthetic import SyntheticClips, render_clip
from zsm_tf.data.video_clips import VideoFolder
from zsm_tf.data.vimeo import VimeoSeptuplets

__all__ = ["SyntheticClips", "VimeoSeptuplets", "VideoFolder", "make_source", "train_dataset",
           "fixed_batch", "make_pair", "downscale", "augment_pair",
           "apply_ops", "index_stream", "shard_stream", "render_clip", "parse_spec"]


def parse_spec(spec):
    """``"kind:arg"`` -> ``(kind, arg or None)``."""
    spec = (spec or "synthetic").strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind not in ("synthetic", "vimeo", "videos"):
        raise ValueError(f"unknown data {spec!r}: use synthetic, synthetic:N, vimeo:DIR or "
                         "videos:DIR")
    if kind in ("vimeo", "videos") and not arg:
        raise ValueError(f"data {kind}:DIR needs a directory")
    return kind, (arg or None)


def make_source(spec, *, hr_patch=128, frames=7, scale=4, seed=0, validation=False, lr_dir=None,
                video_resize=1.0, limit=None, exclude=(), frame_step=1, pan_fraction=0.0, pan_max=24):
    """The training (or, with ``validation=True``, validation) source for a ``--data`` spec.
    ``exclude``: file names a ``videos:`` source leaves out (clips held out for scoring);
    ``frame_step``: a ``videos:`` window takes every ``frame_step``-th frame (2: twice the motion);
    ``pan_fraction`` of its items are camera pans of up to ``pan_max`` HR px/frame over one frame.

    Validation sources take centre crops: the Vimeo test list, generated scenes of another seed,
    or windows spread over the same video folder (not held out).
    """
    kind, arg = parse_spec(spec)
    if kind == "synthetic":
        n = int(arg) if arg else None
        # a fixed set validates on its own clips (an overfitting check); a stream on new scenes
        return SyntheticClips(hr_patch, frames, seed + (1_000_003 if validation and n is None
                                                        else 0), num_clips=n)
    crop = "center" if validation else "random"
    if kind == "vimeo":
        return VimeoSeptuplets(arg, "test" if validation else "train", hr_patch, scale,
                               lr_dir=lr_dir, crop=crop, frames=frames, limit=limit)
    return VideoFolder(arg, frames, hr_patch, resize=video_resize, crop=crop, exclude=exclude,
                       frame_step=frame_step, pan_fraction=pan_fraction, pan_max=pan_max)
