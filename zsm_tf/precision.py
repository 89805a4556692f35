"""Inference precision: float32, or bfloat16 compute (Keras ``mixed_bfloat16``) where it pays.

``--precision bfloat16`` runs the convolutions in bfloat16 (weights stay float32 and are cast,
the model's output is float32). On a CPU with AVX512-BF16 or AMX (and on GPUs with bfloat16
units: compute capability 8.0+) that is about 1.6x faster; elsewhere it is emulated and slower.

``auto`` picks bfloat16 only when the device has it **and** the weights' quality check holds:
the weights' record (:mod:`zsm_tf.run_dir`) holds ``bf16_psnr_cost_db``, the PSNR-Y lost against
float32 on held-out clips (:func:`measure_bf16_cost`, run by ``tools/ship_weights.py``), and it
must be at most :data:`AUTO_MAX_COST_DB`. Weights without that record stay float32 under ``auto``.
"""
from __future__ import annotations

import functools
import os

PRECISIONS = ("float32", "bfloat16", "auto")
AUTO_MAX_COST_DB = 0.05


@functools.lru_cache(maxsize=1)
def device_has_bf16() -> bool:
    """True if the accelerator or CPU computes bfloat16 natively (GPU cc >= 8.0, AVX512-BF16,
    AMX-BF16). ``ZSM_TF_NO_BF16=1`` says False (for tests and comparisons)."""
    if os.environ.get("ZSM_TF_NO_BF16"):
        return False
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
            return bool(cc) and tuple(cc) >= (8, 0)
        except (RuntimeError, ValueError):
            return False
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve(precision: str, bf16_cost_db=None) -> str:
    """``"float32"`` or ``"bfloat16"`` for a requested ``precision``; ``bf16_cost_db``: the
    weights' recorded quality cost of bfloat16 (None: not measured)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    ok = bf16_cost_db is not None and float(bf16_cost_db) <= AUTO_MAX_COST_DB
    return "bfloat16" if ok and device_has_bf16() else "float32"


JIT_ENV = "ZSM_TF_XLA"


def resolve_jit(jit, precision: str, winograd: int = 0) -> bool:
    """Whether inference XLA-compiles the reconstruction (``ZoomingSlowMo.call``'s
    ``jit_reconstruction``). ``"auto"``: in float32 when the Winograd convolutions are off
    (``winograd``: :func:`resolve_winograd`'s tile; they are faster on that stage, and the op
    cannot run inside XLA), unless the environment sets ``ZSM_TF_XLA=0``. In bfloat16 oneDNN's
    kernels are faster than XLA's (measured on an AVX-512/BF16 CPU). On a 2-core AVX2 CPU XLA
    ran that stage 1.9x faster than TensorFlow's oneDNN kernels (0.82 vs 1.55 s per 1280x720
    frame, outputs within 4e-7), compiled in about 2 s per shape."""
    if jit != "auto":
        return bool(jit)
    return precision == "float32" and not winograd and os.environ.get(JIT_ENV, "1") != "0"


WINOGRAD_ENV = "ZSM_TF_WINOGRAD"


def resolve_winograd(winograd, precision: str) -> int:
    """The Winograd tile of inference's 3x3 convolutions (:mod:`zsm_tf.ops.winograd`; 0: the
    stock convolution). ``"auto"``: 6 (F(6x6, 3x3)) in float32 on a TensorFlow that sees no
    GPU, when the compiled op builds: with AVX2 code one window ran 13-18% faster than with
    tile 4 (which ran it 1.6x faster than the stock kernels), held-out PSNR-Y the same to
    1e-5 dB (outputs within ~1e-5 of a direct convolution's, relative; tile 4: ~6e-6, tile
    2: ~1e-6, 1.4x). ``ZSM_TF_WINOGRAD=0|2|4|6`` in the environment sets what ``auto`` means.
    Explicit 2, 4 or 6 still need float32 and the op (else 0); ``False``/0 turns it off."""
    from zsm_tf.ops import winograd as wg

    if winograd == "auto":
        env = os.environ.get(WINOGRAD_ENV, "").strip()
        tile = int(env) if env in ("0", "2", "4", "6") else (-1 if env else 6)
        if tile not in (0, *wg.TILES):
            raise ValueError(f"{WINOGRAD_ENV} must be 0, 2, 4 or 6, got {env!r}")
        if tile:
            import tensorflow as tf

            if tf.config.list_logical_devices("GPU"):
                return 0
    else:
        tile = 2 if winograd is True else int(winograd or 0)
        if tile not in (0, *wg.TILES):
            raise ValueError(f"winograd must be 'auto', 0 (off), 2, 4 or 6, got {winograd!r}")
    if not tile or precision != "float32" or not wg.available():
        return 0
    return tile


FUSED_DEFORM_ENV = "ZSM_TF_FUSED_DEFORM"


def resolve_fused_deform() -> bool:
    """Whether inference runs each deformable convolution as the compiled fused op
    (``ZsmTf>DeformableConv2D``: sampling and GEMM per block of pixels in the cache, float32
    compute, also for bfloat16 models), and the motion base's midpoint as ``ZsmTf>FlowMidpoint``:
    when TensorFlow sees no GPU and the op library loads,
    unless the environment sets ``ZSM_TF_FUSED_DEFORM=0``. Same outputs as the im2col + GEMM
    path to float rounding; one window 4-7% faster with AVX2 code, 3% in bfloat16
    (docs/custom_op.md)."""
    if os.environ.get(FUSED_DEFORM_ENV, "1").strip() == "0":
        return False
    import tensorflow as tf

    from zsm_tf.ops import custom_op

    if tf.config.list_logical_devices("GPU") or not custom_op.custom_op_available():
        return False
    return hasattr(custom_op.load(), "zsm_tf_deformable_conv2d")


def with_precision(model, precision: str):
    """``model`` computing in ``precision`` ("float32" | "bfloat16"): a ZoomingSlowMo is rebuilt
    from its config under that dtype policy, sharing no state, with the same weight values
    (float32 variables). Anything else (a plain callable) is returned as it is."""
    from zsm_tf.model import ZoomingSlowMo

    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be float32 or bfloat16 here, got {precision!r}")
    if not isinstance(model, ZoomingSlowMo):
        return model
    policy = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    if model.dtype_policy.name == policy:
        return model
    config = {k: v for k, v in model.get_config().items() if k not in ("dtype", "trainable")}
    clone = ZoomingSlowMo(**config, dtype=policy)
    clone.set_weights(model.get_weights())
    if hasattr(model, "inference_settings"):
        clone.inference_settings = model.inference_settings
    return clone


def measure_bf16_cost(model, clips, window=None) -> float:
    """PSNR-Y (dB, averaged over ``clips``: lists of HR frames ``[H, W, 3]`` uint8) that bfloat16
    loses against float32, each clip degraded and scored as :func:`zsm_tf.evaluation.evaluate_clip`
    does; what ``auto`` compares with :data:`AUTO_MAX_COST_DB`. Rounded to 0.001 dB, at least 0."""
    import numpy as np

    from zsm_tf.evaluation import evaluate_clip
    from zsm_tf.inference import SpaceTimeUpscaler

    psnr = {}
    for p in ("float32", "bfloat16"):
        up = SpaceTimeUpscaler(model, window=window, precision=p)
        psnr[p] = np.mean([evaluate_clip(up, hr)["model"][0] for hr in clips])
    return max(0.0, round(float(psnr["float32"] - psnr["bfloat16"]), 3))
