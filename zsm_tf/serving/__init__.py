"""The SavedModel that stock TensorFlow Serving serves: graph, warmup, checks, atomic writes.

- :mod:`.signatures`: the two serving endpoints around a model (padding, uint8/float32 I/O).
- :mod:`.saved_model`: writes them with ``keras.export.ExportArchive`` into versioned folders.
- :mod:`.warmup`: ``assets.extra/tf_serving_warmup_requests`` (tensorflow-serving-api protos).
- :mod:`.session`: the TF1 session loader that TF Serving and ``saved_model_cli`` use.
- :mod:`.checks`: the written graph uses stock ops only, and it serves through that loader.

The command is ``python export.py`` (:mod:`zsm_tf.commands.export`).
"""
from zsm_tf.serving.saved_model import ExportError, export_model, write_saved_model
from zsm_tf.serving.session import SessionModel

__all__ = ["ExportError", "SessionModel", "export_model", "write_saved_model"]
