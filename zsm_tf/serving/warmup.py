"""``assets.extra/tf_serving_warmup_requests``: the requests TF Serving replays when it loads a
version, so the first real request is not slow. A TFRecord file of ``PredictionLog`` protos,
written and read with ``tensorflow-serving-api``'s own protos."""
from __future__ import annotations

import os

from zsm_tf.serving.signatures import INPUT_KEY, SIGNATURE_FLOAT, SIGNATURE_UINT8

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
DEFAULT_WARMUP_SHAPES = ((3, 64, 64),)  # (N, H, W), batch 1, one request per signature each


def warmup_requests(shapes=DEFAULT_WARMUP_SHAPES, seed=0):
    """``[(signature, frames)]``: one batch-1 request per signature and (N, H, W) shape; uint8
    frames ``[1, N, H, W, 3]`` for ``serving_default``, the same /255 in float32 for
    ``predict_float``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    requests = []
    for n, h, w in shapes:
        frames = rng.integers(0, 256, size=(1, n, h, w, 3), dtype=np.uint8)
        requests.append((SIGNATURE_UINT8, frames))
        requests.append((SIGNATURE_FLOAT, frames.astype(np.float32) / 255.0))
    return requests


def prediction_log(model_name, signature, inputs):
    """A ``tensorflow.serving.PredictionLog`` holding one Predict request (name -> array)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup(saved_model_dir, model_name, requests):
    """Writes the warmup file of ``[(signature, frames)]`` into ``saved_model_dir``."""
    import tensorflow as tf

    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, frames in requests:
            log = prediction_log(model_name, signature, {INPUT_KEY: frames})
            writer.write(log.SerializeToString())
    return path


def read_warmup(saved_model_dir):
    """``[(model name, signature, {input: array})]`` of a SavedModel's warmup file (empty list
    when it has none), as TF Serving reads it. An empty signature name means
    ``serving_default``, as in TF Serving."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(saved_model_dir, WARMUP_FILE)
    if not os.path.exists(path):
        return []
    records = []
    for raw in tf.compat.v1.io.tf_record_iterator(path):
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"{path}: a {log.WhichOneof('log_type')} record; only predict_log "
                             f"requests are written by zsm-tf")
        req = log.predict_log.request
        records.append((req.model_spec.name, req.model_spec.signature_name or SIGNATURE_UINT8,
                        {k: tf.make_ndarray(v) for k, v in req.inputs.items()}))
    return records
