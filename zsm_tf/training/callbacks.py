"""Training callbacks (``keras.callbacks.Callback``): per-step TensorBoard scalars, validation
PSNR against the bicubic + blending baseline with TensorBoard image strips, periodic checkpoints.

The same objects serve ``model.fit`` and the custom loop of :mod:`zsm_tf.training.trainer`,
which calls ``on_train_begin`` / ``on_train_batch_end`` / ``on_train_end`` as ``fit`` does. They
count *global* steps themselves (:class:`StepCallback`), so ``every=N`` means every N optimizer
steps in both, across resumptions::

    model.compile()   # the paper's loss and optimizer
    model.fit(ds, epochs=..., callbacks=[
        TrainingLog("runs/zsm/logs/train"),
        ValidationCallback(val_lr, val_hr, "runs/zsm/logs/validation", every=1000),
        CheckpointCallback("runs/zsm/checkpoints", every=1000)])
"""
from __future__ import annotations

import os
import shutil
import sys

import keras
import tensorflow as tf

from zsm_tf.baseline import bicubic_blend
from zsm_tf.metrics import psnr
from zsm_tf.training import summary


def _nl():
    """A newline to end a terminal progress bar's line first (nothing when not a terminal)."""
    return "\n" if sys.stdout.isatty() else ""


def image_strip(baseline, output, target, frames=None):
    """``[1, rows*H, 3*W, 3]`` image: per row ``bicubic | output | target`` of one frame of the
    first clip; by default the middle frame (an input) and the one before it (interpolated)."""
    t = int(target.shape[1])
    frames = frames if frames is not None else sorted({max(t // 2 - 1, 0), t // 2})
    rows = [tf.concat([baseline[0, f], output[0, f], target[0, f]], axis=1) for f in frames]
    img = tf.clip_by_value(tf.cast(tf.concat(rows, axis=0), tf.float32), 0.0, 1.0)
    return img[None]


class StepCallback(keras.callbacks.Callback):
    """Counts global training steps, the same under ``model.fit`` and the custom loop.

    ``step`` starts at ``initial_step`` (default: the compiled model's ``optimizer.iterations``,
    so a resumed ``fit`` goes on counting; 0 without an optimizer) and grows by one per train
    batch (use ``fit(steps_per_execution=1)``, the default). Subclasses implement
    ``on_step_end(step, logs)``.
    """

    def __init__(self, initial_step=None):
        super().__init__()
        self.initial_step = initial_step
        self.step = 0

    def on_train_begin(self, logs=None):
        if self.initial_step is not None:
            self.step = int(self.initial_step)
        else:
            opt = getattr(self.model, "optimizer", None)
            self.step = int(opt.iterations.numpy()) if opt is not None else 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.on_step_end(self.step, logs)

    def on_step_end(self, step, logs):
        pass


def _writer(writer_or_dir):
    """``(writer, owned)``: a ``tf.summary`` writer, made from a directory if given one."""
    if writer_or_dir is None or hasattr(writer_or_dir, "as_default"):
        return writer_or_dir, False
    return tf.summary.create_file_writer(os.fspath(writer_or_dir)), True


def _learning_rate(model):
    opt = getattr(model, "optimizer", None)
    if opt is None:
        return None
    return float(opt.learning_rate.numpy() if hasattr(opt.learning_rate, "numpy")
                 else opt.learning_rate)


class TrainingLog(StepCallback):
    """TensorBoard scalars of every step (``every`` = 1) under ``writer`` (a ``tf.summary``
    writer or a directory, e.g. ``runs/zsm/logs/train``): ``loss``, ``lr`` (from the logs, else
    the optimizer's current rate) and ``samples_per_second`` when the logs have ``samples/s``.
    Under ``fit``, ``loss`` is Keras's running mean over the epoch."""

    def __init__(self, writer, every=1, initial_step=None):
        super().__init__(initial_step)
        self.writer, self._owned = _writer(writer)
        self.every = max(int(every or 1), 1)

    def on_step_end(self, step, logs):
        if self.writer is None or step % self.every:
            return
        logs = dict(logs or {})
        lr = logs.get("lr", logs.get("learning_rate"))
        lr = _learning_rate(self.model) if lr is None else lr
        with self.writer.as_default(step=int(step)):
            if "loss" in logs:
                summary.scalar("loss", float(logs["loss"]))
            if lr is not None:
                summary.scalar("lr", float(lr))
            if "samples/s" in logs:
                summary.scalar("samples_per_second", float(logs["samples/s"]))

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.flush()
            if self._owned:
                self.writer.close()


class ValidationCallback(StepCallback):
    """Every ``every`` steps, at the start of a fresh run (step 0: the untrained model, for
    reference) and at the end: PSNR of the model on a fixed validation batch ``lr``
    [B, N, h, w, 3] / ``hr`` [B, 2N-1, scale*h, scale*w, 3], written under ``writer`` (a
    ``tf.summary`` writer or a directory) as ``psnr``, ``psnr_bicubic`` (the baseline of
    :func:`zsm_tf.baseline.bicubic_blend`) and an image strip (``strip``: bicubic | output |
    target), and ``psnr_new``, the PSNR of the interpolated frames alone (odd indices).
    ``writer=None`` evaluates nothing (the non-chief workers of multi-worker training).
    The value is also put in the step's logs as ``val_psnr``."""

    def __init__(self, lr, hr, writer=None, every=1000, scale=4, verbose=True, initial_step=None):
        super().__init__(initial_step)
        self.lr = tf.convert_to_tensor(lr, tf.float32)
        self.hr = tf.convert_to_tensor(hr, tf.float32)
        self.writer, self._owned = _writer(writer)
        self.every = int(every or 0)
        self.verbose = verbose
        self.baseline = bicubic_blend(self.lr, scale)
        self.baseline_psnr = float(psnr(self.baseline, self.hr))
        self._predict = None
        self.last = None
        self._last_step = None

    def _predict_fn(self):
        if self._predict is None:
            from zsm_tf.ops.winograd import scope
            from zsm_tf.precision import resolve_fused_deform, resolve_winograd

            model = self.model
            # the upscaler's Winograd convolutions where they apply (float32 on a CPU)
            dtype = getattr(model, "compute_dtype", "float32")
            tile = resolve_winograd("auto", "float32" if dtype == "float32" else dtype)
            fused = resolve_fused_deform()

            @tf.function(reduce_retracing=True)
            def predict(x):
                with scope(tile, fused_deform=fused):
                    return tf.cast(model(x, training=False), tf.float32)

            self._predict = predict
        return self._predict

    def evaluate(self, step):
        if self.writer is None or step == self._last_step:
            return self.last
        out = self._predict_fn()(self.lr)
        value = float(psnr(out, self.hr))
        new = float(psnr(out[:, 1::2], self.hr[:, 1::2])) if self.hr.shape[1] > 1 else None
        with self.writer.as_default(step=int(step)):
            summary.scalar("psnr", value)
            if new is not None:
                summary.scalar("psnr_new", new)
            summary.scalar("psnr_bicubic", self.baseline_psnr)
            summary.image("strip", image_strip(self.baseline, out, self.hr))
        self.writer.flush()
        if self.verbose:
            extra = f", new frames {new:.2f} dB" if new is not None else ""
            print(f"{_nl()}step {step}: validation PSNR {value:.2f} dB{extra} (bicubic + "
                  f"blending {self.baseline_psnr:.2f} dB)", flush=True)
        self.last = value
        self._last_step = step
        return value

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.step == 0:
            self.evaluate(0)

    def on_step_end(self, step, logs):
        if self.every and step % self.every == 0:
            v = self.evaluate(step)
            if logs is not None and v is not None:
                logs["val_psnr"] = v

    def on_train_end(self, logs=None):
        self.evaluate(self.step)
        if self._owned:
            self.writer.close()


class CheckpointCallback(StepCallback):
    """Saves a ``tf.train`` checkpoint every ``every`` steps and at the end.

    ``manager``: a ``tf.train.CheckpointManager``, or a directory: then the checkpoint holds the
    model and its optimizer (``tf.train.Checkpoint(model=..., optimizer=...)``, keeping the last
    ``max_to_keep``), restorable with ``tf.train.Checkpoint(...).restore``.
    ``before_save(step)`` updates the state saved beside the model (step, data position).
    In multi-worker training every worker must save (saving may involve collectives); workers
    other than the chief save into a temporary directory that is deleted right away
    (``scratch_dir``).
    """

    def __init__(self, manager, every=1000, before_save=None, scratch_dir=None, verbose=True,
                 initial_step=None, max_to_keep=3):
        super().__init__(initial_step)
        self.manager = manager
        self.every = int(every or 0)
        self.before_save = before_save
        self.scratch_dir = scratch_dir
        self.verbose = verbose
        self.max_to_keep = max_to_keep
        self.last_saved = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if not isinstance(self.manager, tf.train.CheckpointManager):
            ckpt = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)
            self.manager = tf.train.CheckpointManager(ckpt, os.fspath(self.manager),
                                                      max_to_keep=self.max_to_keep)
        if self.step > 0:  # resumed: this step is already on disk
            self.last_saved = self.step

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

    def on_step_end(self, step, logs):
        if self.every and step % self.every == 0:
            self.save(step)

    def on_train_end(self, logs=None):
        self.save(self.step)
