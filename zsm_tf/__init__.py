"""zsm-tf: Zooming Slow-Mo space-time video super-resolution in TensorFlow / Keras 3."""
__version__ = "0.1.0"
