"""The paper's training recipe: Charbonnier loss (:mod:`.loss`), Adam with PyTorch's epsilon
(:mod:`.optimizer`), cosine annealing with restarts (:mod:`.schedule`).

Apart from :mod:`zsm_tf.training` so that the model's ``compile()`` defaults
(:func:`compile_defaults`) need no import of the training package, which imports the model.
"""
from zsm_tf.recipe.loss import CharbonnierLoss, charbonnier, charbonnier_per_sample, new_frame_weights, replica_loss
from zsm_tf.recipe.optimizer import TorchAdam, make_adam
from zsm_tf.recipe.schedule import CosineAnnealingRestarts

__all__ = ["CharbonnierLoss", "charbonnier", "charbonnier_per_sample", "new_frame_weights",
           "replica_loss",
           "TorchAdam", "make_adam", "CosineAnnealingRestarts", "compile_defaults"]


def compile_defaults() -> dict:
    """``ZoomingSlowMo.compile()``'s defaults, the paper's setup: Adam (0.9, 0.99, eps 1e-8 placed
    as torch.optim.Adam places it) at lr 4e-4 with cosine annealing restarts (4 x 150k steps,
    eta_min 1e-7), Charbonnier loss (eps 1e-3) summed over the batch."""
    return {"optimizer": TorchAdam(learning_rate=CosineAnnealingRestarts()),
            "loss": CharbonnierLoss(eps=1e-3, reduction="sum")}
