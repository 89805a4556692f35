"""Adam as the authors' ``torch.optim.Adam`` computes it (epsilon after the bias correction).

Keras's Adam updates ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``: it adds
``eps`` to the *uncorrected* ``sqrt(v)``. PyTorch (and the paper's training code) adds it to the
bias-corrected one: ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``. The two agree
only where ``|g|`` is far above ``eps``; :class:`TorchAdam` is Keras's Adam with the epsilon moved,
i.e. ``eps * sqrt(1 - b2^t)`` in Keras's formula. The moment updates are Keras's own.
"""
from __future__ import annotations

import keras
from keras import ops

OPTIMIZERS = ("keras_adam", "torch_adam")


@keras.saving.register_keras_serializable(package="zsm_tf")
class TorchAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with PyTorch's epsilon placement (defaults: the paper's
    lr 4e-4, betas (0.9, 0.99), eps 1e-8). No AMSGrad."""

    def __init__(self, learning_rate=4e-4, beta_1=0.9, beta_2=0.99, epsilon=1e-8,
                 name="torch_adam", **kwargs):
        if kwargs.get("amsgrad"):
            raise ValueError("TorchAdam does not implement amsgrad")
        kwargs.pop("amsgrad", None)
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=False, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, dtype), t)
        correction_2 = ops.sqrt(1 - ops.power(ops.cast(self.beta_2, dtype), t))
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        alpha = lr * correction_2 / (1 - beta_1_power)
        eps = ops.cast(self.epsilon, dtype) * correction_2
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), eps)))

    def get_config(self):
        config = super().get_config()
        config.pop("amsgrad", None)
        return config


def make_adam(kind, learning_rate, beta_1=0.9, beta_2=0.99, epsilon=1e-8):
    """``kind``: "keras_adam" (``keras.optimizers.Adam``) or "torch_adam" (:class:`TorchAdam`)."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {kind!r}")
    cls = TorchAdam if kind == "torch_adam" else keras.optimizers.Adam
    return cls(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
