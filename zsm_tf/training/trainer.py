"""The training loop (Model Garden's trainer): one custom loop for every ``tf.distribute``
strategy, around a :class:`~zsm_tf.training.task.Task` (data, model, optimizer, train step) and a
:class:`~zsm_tf.run_dir.RunDir` (the run's record, checkpoints, weights, logs).

Why not ``model.fit``: Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585), and a single code path for all strategies keeps checkpoints, resumption
and logging identical everywhere. The loop is the standard distributed custom loop:

* model, optimizer (Adam + cosine restarts, wrapped in ``LossScaleOptimizer`` for fp16) are
  created under ``strategy.scope()``, so variables are mirrored;
* the data comes from ``strategy.distribute_datasets_from_function``: every input pipeline
  (worker) builds only its own slice of each global batch (:mod:`zsm_tf.data.pipeline`);
* one ``tf.function`` step runs ``strategy.run(replica_step)``: forward, this replica's share of
  the Charbonnier loss of the global batch (:func:`zsm_tf.recipe.loss.replica_loss`: the mean
  over every value, or the authors' sum with ``train.loss_reduction: sum``), gradients, and
  ``optimizer.apply_gradients``, which all-reduces (sums) the gradients across replicas and
  workers inside the Keras optimizer;
* state is a ``tf.train.Checkpoint(model=..., optimizer=..., step=..., samples_seen=...,
  data_seed=...)`` managed by a ``CheckpointManager`` under ``OUTPUT/checkpoints``; the data
  stream is a pure function of ``(data_seed, sample index)``, so a restart from a checkpoint
  continues with exactly the next batch, the same optimizer moments and the same
  learning-rate schedule position (``optimizer.iterations``).

The output directory is a :class:`zsm_tf.run_dir.RunDir`: the record (``model_config.json``:
architecture and the window of the training clips) written at start, ``checkpoints/``,
``final.weights.h5`` at the end, ``logs/train`` and ``logs/validation`` (all by the chief).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from zsm_tf import interrupts
from zsm_tf.run_dir import RunDir
from zsm_tf.training.callbacks import CheckpointCallback, TrainingLog, ValidationCallback
from zsm_tf.training.strategy import worker_info
from zsm_tf.training.task import Task


class _Progress:
    """Keras progress bar on a terminal; one plain line every ``every`` steps otherwise.
    The loss shown is the mean over the last ``every`` steps."""

    def __init__(self, target, start, every, enabled=True):
        self.enabled = enabled
        self.every = max(int(every or 1), 1)
        self.tty = sys.stdout.isatty()
        self.bar = keras.utils.Progbar(target, stateful_metrics=["loss", "lr", "samples/s"]) \
            if (enabled and self.tty) else None
        self.target = target
        if self.bar is not None and start:
            self.bar.update(start)

    def update(self, step, values):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step, list(values.items()))
        elif step % self.every == 0 or step == self.target:
            text = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
            print(f"step {step}/{self.target}  {text}", flush=True)


@contextlib.contextmanager
def graph_optimizations(enabled=True):
    """Grappler on or off inside the block (the functions first run in it are optimised, or not,
    for good); the process's previous setting comes back after it."""
    before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not enabled})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})


class Trainer:
    """Trains the :class:`~zsm_tf.training.task.Task` of a config dict
    (:mod:`zsm_tf.training.config`) into a run folder, resuming from its checkpoints.

    ``strategy``: a ``tf.distribute.Strategy`` (:func:`zsm_tf.training.strategy.make_strategy`).
    ``source`` / ``val_source``: override the data sources made from ``cfg["data"]``.
    ``deterministic``: see :class:`~zsm_tf.training.task.Task`.
    """

    def __init__(self, cfg, strategy=None, output_dir="runs/zsm", source=None, val_source=None,
                 verbose=True, deterministic=False):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.run_dir = RunDir(output_dir)
        self.out = self.run_dir.path
        self.chief, self.task_type, self.task_id, self.num_workers = worker_info(self.strategy)
        self.verbose = verbose and self.chief
        self.task = Task(cfg, deterministic=deterministic, log=self._log)
        self.cfg = self.task.cfg
        self.scale, self.global_batch = self.task.scale, self.task.global_batch
        if self.global_batch % self.strategy.num_replicas_in_sync:
            raise ValueError(f"global batch {self.global_batch} is not divisible by the "
                             f"{self.strategy.num_replicas_in_sync} replicas")
        self.source = source or self.task.build_source()
        self.val_source = val_source if val_source is not None else self.task.build_val_source()
        self._log(f"Training data: {self.source.describe()}")
        if self.val_source is not None:
            self._log(f"Validation data: {self.cfg['data']['val_clips']} clip(s) of "
                      f"{self.val_source.describe()}")
        self.policy = self.task.policy
        self._build()

    def _log(self, msg):
        if self.verbose:
            print(msg, flush=True)

    def _build(self):
        t = self.cfg["train"]
        with self.strategy.scope():
            self.model = self.task.build_model()
            self.optimizer = self.task.build_optimizer(self.model)
        self.schedule = self.task.schedule
        self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.samples_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="samples_seen")
        self.seed_var = tf.Variable(int(self.cfg["data"]["seed"]), dtype=tf.int64, trainable=False,
                                    name="data_seed")
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                              step=self.step_var, samples_seen=self.samples_var,
                                              data_seed=self.seed_var)
        self.ckpt_dir = self.run_dir.checkpoints
        self.scratch = None
        if self.chief:
            directory = self.ckpt_dir
        else:  # other workers write their (identical) copy aside and delete it
            self.scratch = Path(tempfile.mkdtemp(prefix=f"zsm_worker{self.task_id}_"))
            directory = self.scratch
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.fspath(directory),
                                                  max_to_keep=int(t["keep_checkpoints"]))

    # ------------------------------------------------------------------ state
    def restore(self):
        """Restores the latest checkpoint of ``OUTPUT/checkpoints`` if any, else initialises the
        model (:meth:`Task.initialize`); returns the step."""
        latest = tf.train.latest_checkpoint(os.fspath(self.ckpt_dir))
        if not latest:
            self.task.initialize(self.model)
            return 0
        cfg_seed = int(self.seed_var.numpy())
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        step = int(self.step_var.numpy())
        self._log(f"Resuming from {latest}: step {step}, {int(self.samples_var.numpy())} samples "
                  f"seen, optimizer iterations {int(self.optimizer.iterations.numpy())}")
        if int(self.seed_var.numpy()) != cfg_seed:
            self._log(f"  (data seed {int(self.seed_var.numpy())} from the checkpoint, not "
                      f"{cfg_seed} from the config)")
        return step

    def _make_train_step(self):
        return self.task.train_step(self.model, self.optimizer, self.strategy)

    # ------------------------------------------------------------------ loop
    def fit(self, steps=None, callbacks=()):
        """Trains up to global step ``steps`` (default ``train.steps``), resuming if possible.
        Returns ``{"step", "losses" (this run's per-step losses), "val_psnr"}``.
        ``callbacks``: more Keras callbacks (e.g. :class:`~zsm_tf.training.callbacks.StepCallback`),
        driven after the trainer's own. ``train.graph_optimizations: false`` switches Grappler
        off for this call only."""
        with graph_optimizations(bool(self.cfg["train"]["graph_optimizations"])):
            return self._fit(steps, list(callbacks))

    def _fit(self, steps, extra_callbacks=()):
        t = self.cfg["train"]
        total = int(steps if steps is not None else t["steps"])
        start = self.restore()
        if self.chief:
            self.run_dir.write_record(self.task.record(self.model))
        samples = int(self.samples_var.numpy())
        n_rep = self.strategy.num_replicas_in_sync
        self._log(f"Strategy {type(self.strategy).__name__}: {n_rep} replica(s)"
                  f"{f' on {self.num_workers} workers' if self.num_workers > 1 else ''}, "
                  f"global batch {self.global_batch}; model {self.cfg['model']} "
                  f"({self.model.count_params():,} parameters), precision {self.policy}")

        writer = None
        val_writer = None
        if self.chief:
            writer = tf.summary.create_file_writer(os.fspath(self.run_dir.logs("train")))
            if self.val_source is not None:
                val_writer = tf.summary.create_file_writer(os.fspath(self.run_dir.logs("validation")))
        callbacks = [TrainingLog(writer, initial_step=start)]
        if self.val_source is not None:
            vlr, vhr = self.task.validation_batch(self.val_source, int(self.seed_var.numpy()))
            callbacks.append(ValidationCallback(vlr, vhr, val_writer, t["val_every"], self.scale,
                                                verbose=self.verbose, initial_step=start))
        def before_save(step):
            self.step_var.assign(step)
            self.samples_var.assign(samples)

        ckpt_cb = CheckpointCallback(self.manager, t["checkpoint_every"], before_save,
                                     scratch_dir=self.scratch, verbose=self.verbose,
                                     initial_step=start)
        callbacks.append(ckpt_cb)
        callbacks.extend(extra_callbacks)
        # the same Keras callbacks model.fit takes, driven the way fit drives them
        for cb in callbacks:
            cb.set_model(self.model)
            cb.on_train_begin()

        losses = []
        if start >= total:
            self._log(f"Already at step {start} >= {total}: nothing to train")
        else:
            iterator = iter(self.task.dataset(self.strategy, self.source,
                                              int(self.seed_var.numpy()), samples))
            train_step = self._make_train_step()
            progress = _Progress(total, start, t["print_every"], self.verbose)
            self._log(f"Training steps {start + 1}..{total} (the first one traces the graph)")
            step = start
            tick = time.perf_counter()
            try:
                while step < total:
                    it = int(self.optimizer.iterations.numpy())
                    lr = float(self.schedule.value(it))
                    with interrupts.deferred():   # not raised inside TF's C code (tracing)
                        loss = float(train_step(iterator))
                    interrupts.raise_pending()
                    step += 1
                    samples += self.global_batch
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"loss is {loss} at step {step}")
                    losses.append(loss)
                    now = time.perf_counter()
                    sps = self.global_batch / max(now - tick, 1e-9)
                    tick = now
                    logs = {"loss": loss, "lr": lr, "samples/s": sps}
                    recent = losses[-progress.every:]
                    progress.update(step, {"loss": sum(recent) / len(recent), "lr": lr,
                                           "samples/s": sps})
                    for cb in callbacks:
                        cb.on_train_batch_end(step - 1, logs)
            except KeyboardInterrupt:
                if self.num_workers == 1 and step > start:
                    self._log(f"\ninterrupted: saving step {step}")
                    ckpt_cb.save(step)
                raise
            finally:
                if writer is not None:
                    writer.flush()
            start = step
        for cb in callbacks:
            cb.on_train_end()
        if self.chief:
            path = self.run_dir.final_weights
            self.model.save_weights(os.fspath(path))
            self._log(f"Saved {path}")
        if writer is not None:
            writer.close()
        if val_writer is not None:
            val_writer.close()
        val = next((cb.last for cb in callbacks if isinstance(cb, ValidationCallback)), None)
        return {"step": start, "losses": losses, "val_psnr": val, "checksum": self.checksum()}

    def checksum(self):
        """Sum of |w| over the model's weights (to compare replicas / workers / runs)."""
        return float(sum(tf.reduce_sum(tf.abs(tf.cast(w, tf.float64))).numpy()
                         for w in self.model.weights))
