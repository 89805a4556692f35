"""zsm-tf: Zooming Slow-Mo space-time video super-resolution in TensorFlow / Keras 3.

``ZoomingSlowMo``, ``load_model``, ``SpaceTimeUpscaler`` and ``ops`` are imported lazily, so ``import zsm_tf`` (and the
``zsm-tf`` command's argument checks) do not start TensorFlow.
"""
import importlib
import os

# oneDNN's CPU kernels: TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI/BF16 or
# AMX; on AVX2-only CPUs they made the network ~1.3x faster on one host (outputs within float
# rounding) and cut its page faults; on a Zen 2 host the ConvLSTM 1.27x and the motion base 5x.
# At inference in float32 the 3x3 convolutions run as our Winograd op instead
# (zsm_tf.precision.resolve_winograd); oneDNN keeps the rest (the deformable GEMMs, strided convs).
# Read once, when TensorFlow is first imported: so it takes effect when zsm_tf is imported
# before TensorFlow (the commands always do); a value the user set wins (TF_ENABLE_ONEDNN_OPTS=0
# turns them off).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

_LAZY = {
    "ZoomingSlowMo": ("zsm_tf.model", "ZoomingSlowMo"),
    "load_model": ("zsm_tf.loading", "load_model"),
    "ModelLoadError": ("zsm_tf.loading", "ModelLoadError"),
    "SpaceTimeUpscaler": ("zsm_tf.inference", "SpaceTimeUpscaler"),
    "ops": ("zsm_tf.ops", None),
    "layers": ("zsm_tf.layers", None),
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'zsm_tf' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
