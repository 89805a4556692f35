"""Training, split along its jobs as the TF Model Garden does: the config (:mod:`.config`), the
task (:mod:`.task`: data, model, optimizer, initialisation, train step; the loss, optimizer and
schedule are the paper's recipe, :mod:`zsm_tf.recipe`), the loop (:mod:`.trainer`: strategy,
checkpoints, callbacks, progress) and the run's record (:mod:`zsm_tf.run_dir`)."""
from zsm_tf.recipe import CharbonnierLoss, CosineAnnealingRestarts, charbonnier, charbonnier_per_sample
from zsm_tf.training.config import DEFAULTS, load_config
from zsm_tf.training.strategy import make_strategy, worker_info

__all__ = ["DEFAULTS", "load_config", "CharbonnierLoss", "charbonnier", "charbonnier_per_sample",
           "CosineAnnealingRestarts", "make_strategy", "worker_info", "Trainer"]


def __getattr__(name):
    if name == "Trainer":
        from zsm_tf.training.trainer import Trainer

        return Trainer
    raise AttributeError(name)
