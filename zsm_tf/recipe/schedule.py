"""Cosine annealing with warm restarts (the paper's / EDVR's ``CosineAnnealingLR_Restart``).

Period ``i`` starts at ``sum(periods[:i])`` at ``lr * restart_weights[i]`` and decays along a half
cosine to ``eta_min`` at its end; after the last period the rate stays at ``eta_min``.
Paper: lr 4e-4, four periods of 150k iterations, weights 1, eta_min 1e-7.
``warmup`` (default 0, as the paper) scales the rate linearly from 1/warmup up to 1 over the
first ``warmup`` steps: Adam's first steps move every weight by about lr at once, which wrecks a
good initialisation (see configs/realclips.yaml).
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="zsm_tf")
class CosineAnnealingRestarts(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, initial_learning_rate=4e-4, periods=(150000, 150000, 150000, 150000),
                 restart_weights=None, eta_min=1e-7, name="cosine_restarts", warmup=0):
        super().__init__()
        self.initial_learning_rate = float(initial_learning_rate)
        self.periods = [int(p) for p in periods]
        if not self.periods or min(self.periods) <= 0:
            raise ValueError("periods must be positive")
        self.restart_weights = ([1.0] * len(self.periods) if restart_weights is None
                                else [float(w) for w in restart_weights])
        if len(self.restart_weights) != len(self.periods):
            raise ValueError("restart_weights needs one weight per period")
        self.eta_min = float(eta_min)
        self.name = name
        self.warmup = int(warmup)
        if self.warmup < 0:
            raise ValueError("warmup must be >= 0")

    def value(self, step):
        """Plain-Python learning rate at ``step`` (for logs and tests)."""
        scale = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        return scale * self._cosine_value(step)

    def _cosine_value(self, step):
        start = 0
        for period, w in zip(self.periods, self.restart_weights):
            if step < start + period:
                t = (step - start) / period
                lr = self.initial_learning_rate * w
                return self.eta_min + (lr - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * t))
            start += period
        return self.eta_min

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        periods = tf.constant(self.periods, tf.float32)
        starts = tf.constant([sum(self.periods[:i]) for i in range(len(self.periods))], tf.float32)
        weights = tf.constant(self.restart_weights, tf.float32)
        idx = tf.maximum(tf.reduce_sum(tf.cast(step >= starts, tf.int32)) - 1, 0)
        period = tf.gather(periods, idx)
        t = tf.minimum((step - tf.gather(starts, idx)) / period, 1.0)
        lr = self.initial_learning_rate * tf.gather(weights, idx)
        lr = self.eta_min + (lr - self.eta_min) * 0.5 * (1.0 + tf.cos(math.pi * t))
        if self.warmup:
            lr = lr * tf.minimum(1.0, (step + 1.0) / self.warmup)
        return lr

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "periods": self.periods,
                "restart_weights": self.restart_weights, "eta_min": self.eta_min,
                "name": self.name, "warmup": self.warmup}
