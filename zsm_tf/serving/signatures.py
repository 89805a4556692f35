"""The serving endpoints: ``frames -> {"frames": out}`` around a :class:`ZoomingSlowMo`.

* ``serving_default``: uint8 ``[B, N, H, W, 3]`` (N >= 2, any H, W) -> uint8 ``[B, 2N-1, 4H, 4W, 3]``
* ``predict_float``: float32 in [0, 1] -> float32 in [0, 1], same shapes.

Frames are padded at the bottom/right to multiples of 4 inside the graph (reflection, or edge
replication for frames too small to reflect, like :func:`zsm_tf.inference.pad_frames`) and the
4x output is cropped back; uint8 outputs are rounded and clipped.
"""
from __future__ import annotations

SIGNATURE_UINT8 = "serving_default"
SIGNATURE_FLOAT = "predict_float"
SIGNATURES = (SIGNATURE_UINT8, SIGNATURE_FLOAT)
INPUT_KEY = "frames"
OUTPUT_KEY = "frames"
SCALE = 4
MULTIPLE = 4


def pad_to_multiple(frames, multiple=MULTIPLE):
    """Pads ``[B, N, H, W, C]`` at the bottom/right so that H and W are multiples of
    ``multiple``: reflection when both H and W are larger than their padding, else edge
    replication. Works on unknown shapes."""
    import tensorflow as tf

    shape = tf.shape(frames)
    h, w = shape[2], shape[3]
    ph = tf.math.floormod(-h, multiple)
    pw = tf.math.floormod(-w, multiple)
    reflect = tf.logical_and(h > ph, w > pw)

    def index(n, p):
        i = tf.range(n + p)
        mirrored = tf.where(i < n, i, 2 * (n - 1) - i)
        edge = tf.minimum(i, n - 1)
        return tf.where(reflect, mirrored, edge)

    frames = tf.gather(frames, index(h, ph), axis=2)
    return tf.gather(frames, index(w, pw), axis=3)


def gather_model(model):
    """``model`` itself when it already uses the stock-TF gather path, else a copy rebuilt from
    its config with ``deform_impl="gather"`` and the same weights."""
    from zsm_tf.model import ZoomingSlowMo

    if getattr(model, "deform_impl", None) == "gather":
        return model
    config = {**model.get_config(), "deform_impl": "gather"}
    clone = ZoomingSlowMo.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def serving_endpoints(model):
    """``{signature: (fn, input_signature)}`` for ``keras.export.ExportArchive.add_endpoint``.

    Both endpoints call one ``tf.function`` float32 forward pass, so the model's graph is traced
    and stored once. ``model`` must use stock ops (see :func:`gather_model`)."""
    import tensorflow as tf

    spec = [None, None, None, None, 3]

    @tf.function(autograph=False, input_signature=[tf.TensorSpec(spec, tf.float32)])
    def forward(frames):  # float32 [B, N, H, W, 3] in [0, 1], any H, W
        shape = tf.shape(frames)
        h, w = shape[2], shape[3]
        out = model(pad_to_multiple(frames), training=False)
        out = tf.cast(out[:, :, :SCALE * h, :SCALE * w, :], tf.float32)
        out.set_shape(spec)
        return out

    def predict_uint8(frames):
        out = forward(tf.cast(frames, tf.float32) / 255.0)
        out = tf.clip_by_value(tf.round(out * 255.0), 0.0, 255.0)
        return {OUTPUT_KEY: tf.cast(out, tf.uint8)}

    def predict_float(frames):
        return {OUTPUT_KEY: tf.clip_by_value(forward(frames), 0.0, 1.0)}

    return {SIGNATURE_UINT8: (predict_uint8, [tf.TensorSpec(spec, tf.uint8, name=INPUT_KEY)]),
            SIGNATURE_FLOAT: (predict_float, [tf.TensorSpec(spec, tf.float32, name=INPUT_KEY)])}
