"""Training configuration: built-in quick-start defaults, YAML files, command-line overrides.

``python train.py`` with no ``--config`` uses :data:`DEFAULTS` (identical to
``configs/default.yaml``): a small model on the built-in generated data, sized so that the
validation PSNR visibly rises within a few minutes on a 2-core CPU. ``configs/zsm_vimeo.yaml`` holds the paper's
settings, ``configs/smoke.yaml`` a tiny model for tests.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from zsm_tf.recipe.loss import REDUCTIONS
from zsm_tf.recipe.optimizer import OPTIMIZERS

DEFAULTS = {
    # Quick start: a small ZoomingSlowMo (the model class defaults are the paper's full size:
    # nf=64, groups=8, front_rbs=5, back_rbs=40).
    # residual="motion" and init "kaiming" (neither in the paper; see configs/default.yaml) are
    # what make a couple of CPU minutes give a picture better than bicubic; configs that want the
    # authors' network as it is say residual: none, init: random (configs/zsm_vimeo.yaml).
    "model": {"nf": 16, "groups": 1, "front_rbs": 1, "back_rbs": 2, "deform_impl": "auto",
              "residual": "motion"},
    "data": {
        "source": "synthetic",   # synthetic | synthetic:N | vimeo:DIR | videos:DIR
        "lr_dir": None,          # prepared LR septuplets for vimeo
        "lr_patch": 12,          # LR patch side; HR patch = scale * lr_patch
        "scale": 4,
        "frames": 7,             # HR frames per clip; inputs are the odd ones (1, 3, 5, 7)
        "seed": 0,
        "augment": {"flip": True, "rot90": True, "reverse": True},
        "quantize_lr": True,     # round on-the-fly LR to 8-bit levels, like stored PNGs
        "video_resize": 1.0,     # videos: downscale frames by this factor before cropping
        "exclude": [],           # videos: file names left out (held-out clips), e.g. [a.mkv]
        "frame_step": 1,         # videos: windows of every k-th frame (2: twice the motion)
        "pan_fraction": 0.0,     # videos: this fraction of the items are camera pans over a frame
        "pan_max": 24,           #   of up to pan_max HR px/frame on each axis
        "val_clips": 2,
        "val_lr_patch": 32,
    },
    "train": {
        "steps": 300,
        "init_seed": 0,            # keras.utils.set_random_seed before building the model
        "init": "kaiming",         # random | upsampling | kaiming (zsm_tf/initialization.py)
        "init_weights": None,      # start from these .weights.h5 (e.g. converted authors' weights)
        "global_batch": 4,
        "lr": 1.0e-3,
        "beta_1": 0.9,
        "beta_2": 0.99,
        "epsilon": 1.0e-8,
        "optimizer": "keras_adam",   # keras_adam | torch_adam (eps after the bias correction, as
                                     # the authors' torch.optim.Adam: zsm_tf/recipe/optimizer.py)
        "loss_reduction": "mean",    # mean | sum (the authors': sum over the global batch)
        "periods": None,           # cosine periods (steps); None: one period of train.steps
        "restart_weights": None,   # None: 1 for every period
        "eta_min": 1.0e-7,
        "warmup": 20,              # linear lr warm-up steps
        "charbonnier_eps": 1.0e-3,
        "new_frame_weight": 1.0,   # loss weight of the interpolated frames against the input
                                   # times' (1: the paper's uniform loss; mean weight stays 1)
        "checkpoint_every": 100,
        "keep_checkpoints": 3,
        "val_every": 100,
        "print_every": 10,
        "mixed_precision": None,   # None | bf16 | fp16
        "jit_compile": False,      # XLA-compile forward + backward (GPUs)
        "graph_optimizations": False,  # Grappler: True on GPUs; False starts faster on a CPU
    },
}


def _merge(base, over):
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path=None, overrides=None):
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides`` (nested dict)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        text = Path(path).read_text()
        cfg = _merge(cfg, yaml.safe_load(text) or {})
    cfg = _merge(cfg, overrides or {})
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config sections: {sorted(unknown)}")
    for sec in DEFAULTS:
        extra = set(cfg[sec]) - set(DEFAULTS[sec]) if sec != "model" else set()
        if extra:
            raise ValueError(f"unknown keys in config section {sec!r}: {sorted(extra)}")
    for key in ("nf", "groups", "front_rbs", "back_rbs"):   # before Keras turns them into its words
        v = cfg["model"].get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"model option {key} must be a whole number >= 1, got {v!r} "
                             f"(--model {key}=... or the config's model: section)")
    t = cfg["train"]
    if t["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {t['optimizer']!r}")
    if t["loss_reduction"] not in REDUCTIONS:
        raise ValueError(f"train.loss_reduction must be one of {REDUCTIONS}, "
                         f"got {t['loss_reduction']!r}")
    w = t["new_frame_weight"]
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0:
        raise ValueError(f"train.new_frame_weight must be a number > 0, got {w!r}")
    return cfg
