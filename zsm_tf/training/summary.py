"""TensorBoard scalar / image summaries with core TensorFlow only.

``tf.summary.scalar`` / ``tf.summary.image`` live in the ``tensorboard`` package, which TensorFlow
does not install. These write the same event records (the ``scalars`` and ``images`` plugins'
formats: a float32 scalar; a string tensor ``[width, height, png, ...]``) through
``tf.summary.write``, so TensorBoard shows them whether or not it is installed where training
runs. Use inside ``writer.as_default(step=...)``.
"""
from __future__ import annotations

import tensorflow as tf
from tensorflow.core.framework import summary_pb2


def _metadata(plugin):
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))


def scalar(name, value, step=None):
    """Like ``tf.summary.scalar``."""
    return tf.summary.write(name, tf.cast(value, tf.float32), step=step,
                            metadata=_metadata("scalars"))


def image(name, images, step=None, max_outputs=3):
    """Like ``tf.summary.image``: ``images`` float [k, h, w, c] in [0, 1] (or uint8)."""
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        images = tf.image.convert_image_dtype(tf.clip_by_value(tf.cast(images, tf.float32), 0, 1),
                                              tf.uint8, saturate=True)
    images = images[:max_outputs]
    pngs = tf.map_fn(tf.image.encode_png, images, fn_output_signature=tf.string)
    shape = tf.shape(images)
    dims = tf.stack([tf.strings.as_string(shape[2]), tf.strings.as_string(shape[1])])
    return tf.summary.write(name, tf.concat([dims, pngs], 0), step=step,
                            metadata=_metadata("images"))


def read_scalars(logdir):
    """``{tag: [(step, value), ...]}`` of every event file under ``logdir`` (tests, tools)."""
    from pathlib import Path

    out = {}
    for f in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        for ev in tf.compat.v1.train.summary_iterator(str(f)):
            for v in ev.summary.value:
                if v.metadata.plugin_data.plugin_name == "scalars" or v.HasField("simple_value"):
                    val = v.simple_value if v.HasField("simple_value") else \
                        float(tf.make_ndarray(v.tensor))
                    out.setdefault(v.tag, []).append((int(ev.step), val))
    return out
