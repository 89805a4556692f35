"""A SavedModel loaded the way TensorFlow Serving and ``saved_model_cli run`` load it.

``tensorflow_model_server`` (C++ ``LoadSavedModel``) and ``saved_model_cli`` do not use
``tf.saved_model.load``: they import the MetaGraph into a graph, restore the variables through
the SavedModel's saver, and feed/fetch the tensors that each ``SignatureDef`` names. An export
can pass ``tf.saved_model.load`` and still fail there (keras-team/keras#20095,
tensorflow/serving#2226). :class:`SessionModel` is that loader, in-process, via
``tf.compat.v1.saved_model.loader.load``.
"""
from __future__ import annotations

from zsm_tf.serving.signatures import SIGNATURE_UINT8


class SessionModel:
    """``SessionModel(export_dir)``: the SavedModel's ``serve`` MetaGraph in a TF1 session.

    ``run(signature, {input: array}) -> {output: array}``; ``uninitialized_variables()`` lists
    the graph's variables that the restore did not set (each makes any signature that reads it
    fail with "Could not find variable")."""

    def __init__(self, export_dir, tags=("serve",)):
        import tensorflow as tf
        from tensorflow.python.util import deprecation

        self.export_dir = str(export_dir)
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        # the TF1 loader is what TF Serving runs: its deprecation notice is noise for our users
        with self.graph.as_default(), deprecation.silence():
            self.meta_graph = tf.compat.v1.saved_model.loader.load(
                self.session, list(tags), self.export_dir)

    @property
    def signatures(self):
        """``{name: SignatureDef}``, without TF's internal ``__saved_model_init_op``."""
        return {k: v for k, v in self.meta_graph.signature_def.items() if not k.startswith("__")}

    def variable_handles(self):
        """Names of the graph's variable ops (``VarHandleOp``)."""
        return [op.name for op in self.graph.get_operations() if op.type == "VarHandleOp"]

    def uninitialized_variables(self):
        """The ``shared_name`` of every graph variable that holds no value after loading."""
        import tensorflow as tf

        ops = [op for op in self.graph.get_operations() if op.type == "VarHandleOp"]
        if not ops:
            return []
        with self.graph.as_default():
            flags = [tf.raw_ops.VarIsInitializedOp(resource=op.outputs[0]) for op in ops]
        values = self.session.run(flags)
        return [op.get_attr("shared_name").decode() or op.name
                for op, ok in zip(ops, values) if not ok]

    def run(self, signature, inputs):
        """Runs ``signature`` (default name ``serving_default`` for "") on ``{key: array}``."""
        sigs = self.signatures
        name = signature or SIGNATURE_UINT8
        if name not in sigs:
            raise KeyError(f"no signature {name!r} in {self.export_dir} (has {sorted(sigs)})")
        sig = sigs[name]
        if set(inputs) != set(sig.inputs):
            raise KeyError(f"signature {name!r} takes inputs {sorted(sig.inputs)}, "
                           f"got {sorted(inputs)}")
        feed = {sig.inputs[k].name: v for k, v in inputs.items()}
        fetch = {k: t.name for k, t in sig.outputs.items()}
        return self.session.run(fetch, feed_dict=feed)

    def close(self):
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
