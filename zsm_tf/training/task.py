"""The training task (Model Garden's ``Task``): what is trained and how one step is computed.

From a config (:mod:`zsm_tf.training.config`) it builds the data sources, the model (its
``deform_impl`` and dtype policy resolved here, once), the optimizer (the paper's recipe,
:mod:`zsm_tf.recipe`: Adam + cosine restarts, ``LossScaleOptimizer`` for fp16), the model's
initialisation, the distributed input and the distributed train step. The loop
(:mod:`zsm_tf.training.trainer`) owns the strategy, checkpoints, callbacks and progress; the run's
record is :mod:`zsm_tf.run_dir`. ``model.fit`` users take the same recipe through
``ZoomingSlowMo.compile()`` and the same callbacks (:mod:`zsm_tf.training.callbacks`).
"""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from zsm_tf.data import fixed_batch, make_source, train_dataset
from zsm_tf.recipe import CosineAnnealingRestarts, make_adam, new_frame_weights, replica_loss
from zsm_tf.run_dir import InferenceSettings, ModelRecord, window_of_clip
from zsm_tf.training.config import load_config

POLICIES = {None: "float32", "fp32": "float32", "bf16": "mixed_bfloat16",
            "fp16": "mixed_float16"}


class Task:
    """One training task from a config dict (missing keys: :data:`~zsm_tf.training.config.DEFAULTS`).

    ``deterministic``: the deformable op's implementation must be deterministic (the compiled
    op's GPU gradient is not: the gather path there, or a ``ValueError``). ``log``: notes."""

    def __init__(self, cfg, deterministic=False, log=print):
        self.cfg = load_config(overrides=cfg)
        self.deterministic = bool(deterministic)
        self.log = log
        d, t = self.cfg["data"], self.cfg["train"]
        self.scale = int(d["scale"])
        self.global_batch = int(t["global_batch"])
        self.policy = POLICIES[t["mixed_precision"]]   # the model's own; the process's is left alone
        self.model_kwargs = self._model_kwargs()

    # ------------------------------------------------------------------ model
    def _model_kwargs(self) -> dict:
        """The ZoomingSlowMo arguments, ``deform_impl`` resolved (the one place that does)."""
        kwargs = dict(self.cfg["model"])
        impl = kwargs.get("deform_impl", "auto")
        if self.deterministic:
            from zsm_tf.ops import deterministic_impl

            impl = deterministic_impl(impl)
        if self.cfg["train"]["jit_compile"] and impl != "gather":
            # the compiled deformable op has no XLA kernel; the gather path compiles
            self.log("train.jit_compile: using deform_impl='gather' (XLA-compilable)")
            impl = "gather"
        kwargs["deform_impl"] = impl
        return kwargs

    def build_model(self):
        """The model (call under ``strategy.scope()``); ``train.init_seed`` seeds its weights."""
        from zsm_tf.model import ZoomingSlowMo

        if self.cfg["train"]["init_seed"] is not None:
            keras.utils.set_random_seed(int(self.cfg["train"]["init_seed"]))
        return ZoomingSlowMo(**self.model_kwargs, dtype=self.policy)

    def build_optimizer(self, model):
        """Adam on the cosine-restart schedule, built for ``model`` (under the strategy's scope)."""
        t = self.cfg["train"]
        self.schedule = CosineAnnealingRestarts(t["lr"], t["periods"] or [int(t["steps"])],
                                                t["restart_weights"], t["eta_min"],
                                                warmup=t["warmup"])
        opt = make_adam(t["optimizer"], self.schedule, t["beta_1"], t["beta_2"], t["epsilon"])
        if self.policy == "mixed_float16":
            opt = keras.optimizers.LossScaleOptimizer(opt)
        opt.build(model.trainable_variables)
        return opt

    def initialize(self, model) -> None:
        """A fresh run's starting weights: ``train.init_weights``, else ``train.init``."""
        t = self.cfg["train"]
        if t["init_weights"]:
            model.load_weights(os.fspath(t["init_weights"]))
            self.log(f"Initialised the model from {t['init_weights']}")
        elif t["init"] == "kaiming":
            from zsm_tf.initialization import kaiming_init

            kaiming_init(model, seed=int(t["init_seed"] or 0))
            self.log("Kaiming initialisation: He-normal convolutions, residual blocks x0.1 "
                     "(zsm_tf/initialization.py)")
        elif t["init"] == "upsampling":
            from zsm_tf.initialization import upsampling_init

            upsampling_init(model)
            self.log("Upsampling initialisation: the model starts as nearest x4 with blended new "
                     "frames (zsm_tf/initialization.py)")

    def record(self, model) -> ModelRecord:
        """The run's record: the architecture and the window of the training clips."""
        return ModelRecord(model.get_config(),
                           InferenceSettings(window=window_of_clip(self.cfg["data"]["frames"])))

    # ------------------------------------------------------------------ data
    def _source_args(self):
        d = self.cfg["data"]
        return dict(frames=int(d["frames"]), scale=self.scale, seed=int(d["seed"]),
                    lr_dir=d["lr_dir"], video_resize=float(d["video_resize"]),
                    exclude=tuple(d.get("exclude") or ()), frame_step=int(d.get("frame_step") or 1),
                    pan_fraction=float(d.get("pan_fraction") or 0.0), pan_max=int(d.get("pan_max") or 24))

    def build_source(self):
        """The training source of ``cfg["data"]``."""
        d = self.cfg["data"]
        return make_source(d["source"], hr_patch=int(d["lr_patch"]) * self.scale,
                           **self._source_args())

    def build_val_source(self):
        """The validation source (``data.val_clips`` clips), or None."""
        d = self.cfg["data"]
        if int(d["val_clips"] or 0) <= 0:
            return None
        try:
            return make_source(d["source"], hr_patch=int(d["val_lr_patch"]) * self.scale,
                               validation=True, limit=int(d["val_clips"]), **self._source_args())
        except (OSError, ValueError) as e:
            self.log(f"validation disabled: {e}")
            return None

    def dataset(self, strategy, source, seed, start_sample):
        """The distributed training input from sample ``start_sample`` of the seeded stream."""
        d = self.cfg["data"]

        def fn(ctx):
            return train_dataset(source, global_batch=self.global_batch, seed=seed,
                                 start_sample=start_sample, input_context=ctx, scale=self.scale,
                                 augment=dict(d["augment"]) if d["augment"] else False,
                                 quantize=bool(d["quantize_lr"]))

        return strategy.distribute_datasets_from_function(fn)

    def validation_batch(self, source, seed):
        """The fixed validation clips ``(lr, hr)``."""
        d = self.cfg["data"]
        return fixed_batch(source, int(d["val_clips"]), seed=seed, scale=self.scale,
                           quantize=bool(d["quantize_lr"]))

    # ------------------------------------------------------------------ step
    def train_step(self, model, opt, strategy):
        """``tf.function(iterator) -> loss``: one distributed step (forward, this replica's share
        of the Charbonnier loss, gradients, ``apply_gradients``, which all-reduces them)."""
        t = self.cfg["train"]
        eps = float(t["charbonnier_eps"])
        reduction = t["loss_reduction"]
        new_w = float(t["new_frame_weight"])
        global_batch = self.global_batch
        fp16 = self.policy == "mixed_float16"
        sync_finite = fp16 and strategy.num_replicas_in_sync > 1

        def compute(lr, hr):
            with tf.GradientTape() as tape:
                out = model(lr, training=True)
                weights = None if new_w == 1.0 else new_frame_weights(hr.shape[1], new_w)
                loss = replica_loss(hr, out, global_batch, eps, reduction, weights)
                scaled = opt.scale_loss(loss) if fp16 else loss
            grads = tape.gradient(scaled, model.trainable_variables)
            return loss, grads

        if t["jit_compile"]:
            compute = tf.function(compute, jit_compile=True)

        def replica_step(lr, hr):
            loss, grads = compute(lr, hr)
            if sync_finite:
                # LossScaleOptimizer checks each replica's own gradients: make every replica
                # see non-finite gradients if any does, so all skip the step together.
                finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
                bad = tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
                ok = tf.cast(tf.equal(bad, 0.0), tf.float32)  # 1 or 0: 1/0 = inf taints all
                grads = [g * tf.cast(1.0 / ok, g.dtype) for g in grads]
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        @tf.function
        def step(iterator):
            lr, hr = next(iterator)
            losses = strategy.run(replica_step, args=(lr, hr))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

        return step
