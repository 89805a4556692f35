"""Training: Charbonnier loss, cosine-restart schedule, strategies, the distributed loop."""
from zsm_tf.training.config import DEFAULTS, load_config
from zsm_tf.training.loss import CharbonnierLoss, charbonnier, charbonnier_per_sample
from zsm_tf.training.schedule import CosineAnnealingRestarts
from zsm_tf.training.strategy import make_strategy, worker_info

__all__ = ["DEFAULTS", "load_config", "CharbonnierLoss", "charbonnier", "charbonnier_per_sample",
           "CosineAnnealingRestarts", "make_strategy", "worker_info", "Trainer"]


def __getattr__(name):
    if name == "Trainer":
        from zsm_tf.training.trainer import Trainer

        return Trainer
    raise AttributeError(name)
