"""Loader for the compiled deformable-sampling op of ``custom_ops/`` (not built yet)."""


def custom_op_available() -> bool:
    """True when the compiled op library is loaded."""
    return False


def deformable_im2col(*args, **kwargs):
    raise RuntimeError("the compiled deformable op is not available; use impl='gather'")
