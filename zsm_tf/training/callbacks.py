"""Training callbacks: validation PSNR + TensorBoard image strips, periodic checkpoints.

They are ``keras.callbacks.Callback`` subclasses driven by the custom training loop of
:mod:`zsm_tf.training.trainer` through ``on_train_begin`` / ``on_train_batch_end(step, logs)`` /
``on_train_end`` (``step`` is the *global* step, 1-based after the update), so they would also
work under ``model.fit`` with a batch counter.
"""
from __future__ import annotations

import shutil
import sys

import keras
import tensorflow as tf

from zsm_tf.baseline import bicubic_blend
from zsm_tf.training import summary


def _nl():
    """A newline to end a terminal progress bar's line first (nothing when not a terminal)."""
    return "\n" if sys.stdout.isatty() else ""


def psnr(pred, target, max_val=1.0):
    """Mean PSNR (dB) over all frames of ``[B, T, H, W, C]`` clips, on clipped predictions."""
    pred = tf.clip_by_value(tf.cast(pred, tf.float32), 0.0, max_val)
    target = tf.cast(target, tf.float32)
    mse = tf.reduce_mean(tf.square(pred - target), axis=[-3, -2, -1])
    return tf.reduce_mean(10.0 * tf.math.log(max_val ** 2 / tf.maximum(mse, 1e-10)) /
                          tf.math.log(10.0))


def image_strip(baseline, output, target, frames=None):
    """``[1, rows*H, 3*W, 3]`` image: per row ``bicubic | output | target`` of one frame of the
    first clip; by default the middle frame (an input) and the one before it (interpolated)."""
    t = int(target.shape[1])
    frames = frames if frames is not None else sorted({max(t // 2 - 1, 0), t // 2})
    rows = [tf.concat([baseline[0, f], output[0, f], target[0, f]], axis=1) for f in frames]
    img = tf.clip_by_value(tf.cast(tf.concat(rows, axis=0), tf.float32), 0.0, 1.0)
    return img[None]


class ValidationCallback(keras.callbacks.Callback):
    """Every ``every`` steps (and at the end): PSNR of the model on a fixed validation batch,
    written to TensorBoard (``psnr``, ``psnr_bicubic``) with an image strip (``strip``:
    LR-bicubic | output | target). Only the chief logs (``writer=None`` elsewhere)."""

    def __init__(self, lr, hr, writer=None, every=1000, scale=4, verbose=True):
        super().__init__()
        self.lr = tf.convert_to_tensor(lr, tf.float32)
        self.hr = tf.convert_to_tensor(hr, tf.float32)
        self.writer = writer
        self.every = int(every or 0)
        self.verbose = verbose
        self.baseline = bicubic_blend(self.lr, scale)
        self.baseline_psnr = float(psnr(self.baseline, self.hr))
        self._predict = None
        self.last = None
        self._last_step = None

    def _predict_fn(self):
        if self._predict is None:
            model = self.model

            @tf.function(reduce_retracing=True)
            def predict(x):
                return tf.cast(model(x, training=False), tf.float32)

            self._predict = predict
        return self._predict

    def evaluate(self, step):
        if self.writer is None or step == self._last_step:
            return self.last
        out = self._predict_fn()(self.lr)
        value = float(psnr(out, self.hr))
        with self.writer.as_default(step=int(step)):
            summary.scalar("psnr", value)
            summary.scalar("psnr_bicubic", self.baseline_psnr)
            summary.image("strip", image_strip(self.baseline, out, self.hr))
        self.writer.flush()
        if self.verbose:
            print(f"{_nl()}step {step}: validation PSNR {value:.2f} dB (bicubic + blending "
                  f"{self.baseline_psnr:.2f} dB)", flush=True)
        self.last = value
        self._last_step = step
        return value

    def on_train_batch_end(self, batch, logs=None):
        if self.every and batch % self.every == 0:
            v = self.evaluate(batch)
            if logs is not None and v is not None:
                logs["val_psnr"] = v

    def on_train_end(self, logs=None):
        step = (logs or {}).get("step")
        if step is not None:
            self.evaluate(step)


class CheckpointCallback(keras.callbacks.Callback):
    """Saves ``manager``'s checkpoint every ``every`` steps and at the end.

    ``before_save(step)`` updates the state saved beside the model (step, data position).
    In multi-worker training every worker must save (saving may involve collectives); workers
    other than the chief save into a temporary directory that is deleted right away
    (``scratch_dir``).
    """

    def __init__(self, manager, every, before_save=None, scratch_dir=None, verbose=True):
        super().__init__()
        self.manager = manager
        self.every = int(every or 0)
        self.before_save = before_save
        self.scratch_dir = scratch_dir
        self.verbose = verbose
        self.last_saved = None

    def save(self, step):
        if step == self.last_saved:
            return
        if self.before_save is not None:
            self.before_save(step)
        path = self.manager.save(checkpoint_number=int(step))
        if self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)
        elif self.verbose:
            print(f"{_nl()}step {step}: saved checkpoint {path}", flush=True)
        self.last_saved = step

    def on_train_batch_end(self, batch, logs=None):
        if self.every and batch % self.every == 0:
            self.save(batch)

    def on_train_end(self, logs=None):
        step = (logs or {}).get("step")
        if step is not None:
            self.save(step)

