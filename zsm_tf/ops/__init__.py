"""Deformable convolution ops: the stock-TF gather path and the compiled custom op."""
from zsm_tf.ops.custom_op import build_info, custom_op_available
from zsm_tf.ops.deform_conv import deform_conv2d, deformable_im2col, deterministic_impl, resolve_impl

__all__ = ["deform_conv2d", "deformable_im2col", "custom_op_available", "resolve_impl",
           "deterministic_impl", "build_info"]
