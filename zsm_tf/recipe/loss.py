"""Charbonnier loss, the paper's reconstruction loss: ``sqrt((y - x)^2 + eps^2)``, eps = 1e-3.

Two reductions over the global batch:

* ``"sum"``, the authors' (``CharbonnierLoss`` of their training code sums over every value of
  the batch): what ``configs/zsm_vimeo.yaml`` and ``ZoomingSlowMo.compile()`` use, so that Adam's
  epsilon sees the paper's gradient scale and one step equals theirs;
* ``"mean"`` over all values (the quick-start configs): the logged loss stays comparable across
  patch and batch sizes. Adam is invariant to the loss scale *except through its epsilon*: with
  the mean, gradients are smaller by the number of values (688,128 for the paper's batch), so
  eps = 1e-8 acts like 0.0069 on the paper's scale and the steps differ.

``frame_weights`` (``[T]``, optional) weighs the frames of ``[B, T, H, W, C]`` outputs, e.g.
:func:`new_frame_weights` puts more weight on the interpolated frames (odd indices) than on the
input frames; the weights are normalised to mean 1, so the loss keeps its scale.
"""
from __future__ import annotations

import keras
import tensorflow as tf

REDUCTIONS = ("mean", "sum")


def new_frame_weights(frames, new_frame_weight=1.0):
    """``[T]`` float32 weights for ``frames`` = 2N - 1 output frames: ``new_frame_weight`` on the
    interpolated ones (odd indices), 1 on the input times (even), normalised to mean 1."""
    frames = int(frames)
    w = float(new_frame_weight)
    if frames < 1 or not w > 0:
        raise ValueError(f"need frames >= 1 and new_frame_weight > 0, got {frames}, {w}")
    raw = [w if t % 2 else 1.0 for t in range(frames)]
    mean = sum(raw) / frames
    return tf.constant([r / mean for r in raw], tf.float32)


def charbonnier_per_sample(y_true, y_pred, eps=1e-3, reduction="mean", frame_weights=None):
    """Charbonnier penalty of each sample, the mean (or ``reduction="sum"``) over its values:
    ``[B, ...] -> [B]`` (float32; float64 when both inputs are float64). With ``frame_weights``
    ``[T]`` (mean 1) the inputs are ``[B, T, ...]`` and each frame's values count that much."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    dtype = tf.float64 if (tf.as_dtype(getattr(y_pred, "dtype", tf.float32)) == tf.float64 and
                           tf.as_dtype(getattr(y_true, "dtype", tf.float32)) == tf.float64) \
        else tf.float32
    y_true = tf.cast(y_true, dtype)
    y_pred = tf.cast(y_pred, dtype)
    d = y_pred - y_true
    if frame_weights is not None:
        pen = tf.reshape(tf.sqrt(d * d + eps * eps), [tf.shape(d)[0], tf.shape(d)[1], -1])
        pen = pen * tf.cast(tf.reshape(frame_weights, [1, -1, 1]), dtype)
        pen = tf.reshape(pen, [tf.shape(d)[0], -1])
    else:
        pen = tf.reshape(tf.sqrt(d * d + eps * eps), [tf.shape(d)[0], -1])
    return tf.reduce_sum(pen, axis=1) if reduction == "sum" else tf.reduce_mean(pen, axis=1)


def charbonnier(y_true, y_pred, eps=1e-3, reduction="mean", frame_weights=None):
    """Charbonnier penalty over everything (a scalar): the mean, or the sum."""
    per_sample = charbonnier_per_sample(y_true, y_pred, eps, reduction, frame_weights)
    return tf.reduce_sum(per_sample) if reduction == "sum" else tf.reduce_mean(per_sample)


def replica_loss(y_true, y_pred, global_batch, eps=1e-3, reduction="mean", frame_weights=None):
    """This replica's share of the global batch's loss (inside ``strategy.run``): summed over the
    replicas (as their gradients are, by the optimizer) it is the mean over every value of the
    global batch (``tf.nn.compute_average_loss`` of the per-sample means) or their sum."""
    per_sample = charbonnier_per_sample(y_true, y_pred, eps, reduction, frame_weights)
    if reduction == "sum":
        return tf.reduce_sum(per_sample)
    return tf.nn.compute_average_loss(per_sample, global_batch_size=global_batch)


@keras.saving.register_keras_serializable(package="zsm_tf")
class CharbonnierLoss(keras.losses.Loss):
    """Keras loss for ``model.compile``: ``reduction="sum"`` is the authors' (the sum over every
    value of the global batch: Keras does not rescale a summed loss under a distribution
    strategy, and the replicas' gradients are summed); the default ``"sum_over_batch_size"`` is
    the mean over every value."""

    def __init__(self, eps=1e-3, name="charbonnier", reduction="sum_over_batch_size", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.eps = float(eps)

    def call(self, y_true, y_pred):
        return charbonnier_per_sample(y_true, y_pred, self.eps,
                                      "sum" if self.reduction == "sum" else "mean")

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}
