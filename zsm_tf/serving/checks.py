"""Checks of a written SavedModel before it is published.

- :func:`check_stock_ops`: the graph runs on stock TensorFlow (no op of our compiled library).
- :func:`verify`: it serves through :class:`~zsm_tf.serving.session.SessionModel`, TF Serving's
  loader: every variable restored, every warmup request answered with the right shape, and the
  float signature equal to the Keras model.
"""
from __future__ import annotations

import os

from zsm_tf.serving.signatures import INPUT_KEY, OUTPUT_KEY, SCALE, SIGNATURE_FLOAT, SIGNATURES

# ops of our compiled library: never allowed in an export (TF Serving cannot load them)
CUSTOM_OPS = frozenset({"ZsmTf>DeformableIm2col", "ZsmTf>DeformableIm2colGrad"})
# the served float output may differ from the Keras model only by float32 rounding
MAX_FLOAT_DIFF = 1e-4


class ExportError(Exception):
    """The export failed; the message is one line."""


class VersionExistsError(ExportError):
    """``path``, the export's version folder, is there already (exports never overwrite)."""

    def __init__(self, version, path):
        super().__init__(f"version {version} already exists: {path} (exports never overwrite; "
                         f"pick another version or leave it out for the next one)")
        self.version, self.path = version, path


def graph_ops(saved_model_dir):
    """Every op type that the SavedModel's graph and function library run (calls of the
    library's own functions excluded)."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    ops, functions = set(), set()
    for mg in sm.meta_graphs:
        ops.update(n.op for n in mg.graph_def.node)
        for fn in mg.graph_def.library.function:
            functions.add(fn.signature.name)
            ops.update(n.op for n in fn.node_def)
        ops.update(op.name for op in mg.meta_info_def.stripped_op_list.op)
    return ops - functions


def check_stock_ops(saved_model_dir):
    """Raises ExportError when the graph uses our compiled op or any op that this TensorFlow
    does not know."""
    from tensorflow.python.framework import op_def_registry

    bad = sorted(op for op in graph_ops(saved_model_dir)
                 if op in CUSTOM_OPS or op_def_registry.get(op) is None)
    if bad:
        raise ExportError(f"the exported graph uses ops stock TensorFlow Serving cannot run: "
                          f"{', '.join(bad)}")


def verify(saved_model_dir, requests, model=None):
    """Loads the export with TF Serving's session loader and runs ``[(signature, frames)]``.

    Raises ExportError when a signature is missing, a variable is not restored, an output has
    the wrong shape, or (given ``model``) ``predict_float`` differs from ``model`` by more than
    ``MAX_FLOAT_DIFF``."""
    import numpy as np

    from zsm_tf.serving.session import SessionModel

    with SessionModel(saved_model_dir) as served:
        missing = [s for s in SIGNATURES if s not in served.signatures]
        if missing:
            raise ExportError(f"the export has no {missing[0]!r} signature")
        lost = served.uninitialized_variables()
        if lost:
            raise ExportError(f"TF Serving's loader restores no value for {len(lost)} of "
                              f"{len(served.variable_handles())} variables (e.g. {lost[0]})")
        compared = False
        for signature, frames in requests:
            out = served.run(signature, {INPUT_KEY: frames})[OUTPUT_KEY]
            b, n, h, w, c = frames.shape
            want = (b, 2 * n - 1, SCALE * h, SCALE * w, c)
            if tuple(out.shape) != want:
                raise ExportError(f"signature {signature!r} gave shape {tuple(out.shape)} for "
                                  f"input {frames.shape}, expected {want}")
            if model is not None and signature == SIGNATURE_FLOAT and not compared:
                from zsm_tf.inference import pad_frames

                ref = np.asarray(model(pad_frames(frames), training=False))
                ref = np.clip(ref[:, :, :SCALE * h, :SCALE * w].astype(np.float32), 0.0, 1.0)
                diff = float(np.abs(out - ref).max())
                if not diff <= MAX_FLOAT_DIFF:
                    raise ExportError(f"the served {SIGNATURE_FLOAT!r} output differs from the "
                                      f"model by {diff:.3g} (> {MAX_FLOAT_DIFF})")
                compared = True
