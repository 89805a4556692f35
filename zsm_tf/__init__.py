"""zsm-tf: Zooming Slow-Mo space-time video super-resolution in TensorFlow / Keras 3."""
__version__ = "0.1.0"

from zsm_tf.model import ZoomingSlowMo  # noqa: E402
from zsm_tf import ops  # noqa: E402

__all__ = ["ZoomingSlowMo", "ops"]
