"""Export a trained model as a SavedModel that stock TensorFlow Serving serves.

``python export.py [--checkpoint PATH] [--output-dir DIR] [--version V]`` writes the TF Serving
layout ``DIR/<V>/`` (``saved_model.pb``, ``variables/``,
``assets.extra/tf_serving_warmup_requests``) with two signatures:

* ``serving_default``: input ``frames`` uint8 ``[batch, N, H, W, 3]`` (N >= 2, any H, W) ->
  output ``frames`` uint8 ``[batch, 2N-1, 4H, 4W, 3]``;
* ``predict_float``: the same with float32 in ``[0, 1]`` in and out.

Inside the graph, frames are padded at the bottom/right to multiples of 4 (reflection, or edge
replication for frames too small to reflect: what :func:`zsm_tf.inference.pad_frames` does) and
the 4x output is cropped back; uint8 outputs are rounded and clipped.

The exported graph uses only stock TensorFlow ops: the model is rebuilt from its config with
``deform_impl="gather"`` and its weights copied, whatever implementation it was trained with
(the compiled op of ``custom_ops/`` cannot be loaded by TF Serving), and the written graph is
checked for ops TF does not ship. The SavedModel is written into a temporary folder inside
``DIR`` and renamed to ``DIR/<V>`` when complete: TF Serving (which only looks at numeric folder
names) never sees a partial version, an existing version is never overwritten, and a failed export
leaves nothing behind.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
import warnings

from zsm_tf.errors import one_line as _one_line
from zsm_tf.loading import DEFAULT_RUN_DIR, ModelLoadError, load_source, resolve_source

SIGNATURE_UINT8 = "serving_default"
SIGNATURE_FLOAT = "predict_float"
INPUT_KEY = "frames"
OUTPUT_KEY = "frames"
SCALE = 4
MULTIPLE = 4
DEFAULT_OUTPUT_DIR = os.path.join("exported", "zsm")
DEFAULT_WARMUP_SHAPES = ((3, 64, 64),)  # (N, H, W), batch 1, one request per signature each
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# ops of our compiled library: never allowed in an export (TF Serving cannot load them)
CUSTOM_OPS = frozenset({"DeformableIm2col", "DeformableIm2colGrad"})


class ExportError(Exception):
    """The export failed; the message is one line."""


# --------------------------------------------------------------------------------------------
# the serving graph
# --------------------------------------------------------------------------------------------
def pad_to_multiple(frames, multiple=MULTIPLE):
    """Pads ``[B, N, H, W, C]`` at the bottom/right so that H and W are multiples of
    ``multiple``: reflection when both H and W are larger than their padding, else edge
    replication (like :func:`zsm_tf.inference.pad_frames`). Works on unknown shapes."""
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


def serving_functions(model):
    """``(uint8_fn, float_fn)``: ``tf.function``s ``frames -> {"frames": out}`` around ``model``
    with the signatures' input specs. Both call one traced float32 forward pass, so the model's
    graph is traced and stored once."""
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

    @tf.function(autograph=False, input_signature=[tf.TensorSpec(spec, tf.uint8, name=INPUT_KEY)])
    def predict_uint8(frames):
        out = forward(tf.cast(frames, tf.float32) / 255.0)
        out = tf.clip_by_value(tf.round(out * 255.0), 0.0, 255.0)
        return {OUTPUT_KEY: tf.cast(out, tf.uint8)}

    @tf.function(autograph=False, input_signature=[tf.TensorSpec(spec, tf.float32, name=INPUT_KEY)])
    def predict_float(frames):
        return {OUTPUT_KEY: tf.clip_by_value(forward(frames), 0.0, 1.0)}

    return predict_uint8, predict_float


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


def write_saved_model(model, path):
    """Writes the SavedModel with both signatures to ``path`` (which must not exist).

    Only the model's variables and the two signatures are saved (not the Keras model object,
    whose serialization would trace its ``call`` again): one trace of the forward pass."""
    import tensorflow as tf

    model = gather_model(model)
    uint8_fn, float_fn = serving_functions(model)
    signatures = {SIGNATURE_UINT8: uint8_fn.get_concrete_function(),
                  SIGNATURE_FLOAT: float_fn.get_concrete_function()}
    root = tf.Module()
    root.variables_ = list(model.variables)  # keras Variables are trackable
    tf.saved_model.save(root, path, signatures=signatures)


# --------------------------------------------------------------------------------------------
# checks of the written graph
# --------------------------------------------------------------------------------------------
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


def verify(saved_model_dir, requests):
    """Loads the export and runs each warmup request through its signature; checks shapes."""
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_dir)
    for name in (SIGNATURE_UINT8, SIGNATURE_FLOAT):
        if name not in loaded.signatures:
            raise ExportError(f"the export has no {name!r} signature")
    for signature, frames in requests:
        out = loaded.signatures[signature](**{INPUT_KEY: tf.constant(frames)})[OUTPUT_KEY]
        b, n, h, w, c = frames.shape
        want = (b, 2 * n - 1, SCALE * h, SCALE * w, c)
        if tuple(out.shape) != want:
            raise ExportError(f"signature {signature!r} gave shape {tuple(out.shape)} for input "
                              f"{frames.shape}, expected {want}")


# --------------------------------------------------------------------------------------------
# warmup requests
# --------------------------------------------------------------------------------------------
def warmup_requests(shapes=DEFAULT_WARMUP_SHAPES, seed=0):
    """``[(signature, frames)]``: one batch-1 request per signature and (N, H, W) shape."""
    import numpy as np

    rng = np.random.default_rng(seed)
    requests = []
    for n, h, w in shapes:
        frames = rng.integers(0, 256, size=(1, n, h, w, 3), dtype=np.uint8)
        requests.append((SIGNATURE_UINT8, frames))
        requests.append((SIGNATURE_FLOAT, frames.astype(np.float32) / 255.0))
    return requests


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number, payload):
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_prediction_log(model_name, signature, inputs):
    """Serialized ``tensorflow.serving.PredictionLog`` holding one ``PredictLog`` whose request
    has ``model_spec {name, signature_name}`` and ``inputs`` (name -> array), byte for byte what
    the ``tensorflow-serving-api`` protos serialize. Used when that package is not installed.

    Field numbers (tensorflow_serving/apis): ModelSpec name=1 signature_name=3;
    PredictRequest model_spec=1 inputs=2 (map entry key=1 value=2); PredictLog request=1;
    PredictionLog predict_log=6."""
    import tensorflow as tf

    spec = _field(1, model_name.encode()) + _field(3, signature.encode())
    request = _field(1, spec)
    for key in sorted(inputs):
        tensor = tf.make_tensor_proto(inputs[key]).SerializeToString()
        request += _field(2, _field(1, key.encode()) + _field(2, tensor))
    return _field(6, _field(1, request))


def serialize_prediction_log(model_name, signature, inputs):
    """Serialized PredictionLog for one Predict request, with the TF Serving protos when
    ``tensorflow-serving-api`` is installed, else with :func:`encode_prediction_log`."""
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError:
        return encode_prediction_log(model_name, signature, inputs)
    import tensorflow as tf

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))
    return log.SerializeToString()


def write_warmup(saved_model_dir, model_name, requests):
    """Writes ``assets.extra/tf_serving_warmup_requests`` (TFRecord of PredictionLog)."""
    import tensorflow as tf

    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, frames in requests:
            writer.write(serialize_prediction_log(model_name, signature, {INPUT_KEY: frames}))
    return path


# --------------------------------------------------------------------------------------------
# versions and the atomic write
# --------------------------------------------------------------------------------------------
def existing_versions(output_dir):
    """The version numbers (numeric sub-folders) already in ``output_dir``."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(int(n) for n in os.listdir(output_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(output_dir, n)))


def next_version(output_dir):
    versions = existing_versions(output_dir)
    return versions[-1] + 1 if versions else 1


def _make_dirs(path):
    """``os.makedirs(path)``; returns the folders it created, deepest first."""
    created = []
    p = os.path.abspath(path)
    while not os.path.exists(p):
        created.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    os.makedirs(path, exist_ok=True)
    return created


def export_model(model, output_dir=DEFAULT_OUTPUT_DIR, version=None, model_name=None,
                 warmup_shapes=DEFAULT_WARMUP_SHAPES, check=True):
    """Exports ``model`` to ``output_dir/<version>`` for TF Serving; returns that path.

    Args:
      model: a :class:`~zsm_tf.model.ZoomingSlowMo` (any ``deform_impl``).
      output_dir: the model's TF Serving base path.
      version: positive int; default one more than the highest version there (1 for none).
        An existing version is an error.
      model_name: ``model_spec.name`` of the warmup requests (default: ``output_dir``'s name).
      warmup_shapes: (N, H, W) of the warmup requests; empty: no warmup file.
      check: load the written SavedModel and run the warmup requests (or one small request)
        through both signatures before publishing it.
    Raises:
      ExportError (one-line message); nothing is left in ``output_dir`` then.
    """
    output_dir = os.path.abspath(output_dir)
    if version is None:
        version = next_version(output_dir)
    version = int(version)
    if version < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    final = os.path.join(output_dir, str(version))
    if os.path.exists(final):
        raise ExportError(f"version {version} already exists: {final} (exports never overwrite; "
                          f"pick another --version or leave it out for the next one)")
    if model_name is None:
        model_name = os.path.basename(output_dir.rstrip(os.sep)) or "zsm"
    try:
        created = _make_dirs(output_dir)
    except OSError as e:
        raise ExportError(f"cannot create {output_dir}: {e.strerror or e}") from None
    staging = None
    try:
        staging = tempfile.mkdtemp(prefix=f".export-{version}-", dir=output_dir)
        path = os.path.join(staging, "model")
        write_saved_model(model, path)
        check_stock_ops(path)
        requests = warmup_requests(warmup_shapes) if warmup_shapes else []
        if requests:
            write_warmup(path, model_name, requests)
        if check:
            verify(path, requests or warmup_requests(((2, 8, 8),)))
        if os.path.exists(final):
            raise ExportError(f"version {version} appeared in {output_dir} during the export")
        os.rename(path, final)
    except BaseException as e:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
        for d in created:  # deepest first; only folders this export made, and only if empty
            try:
                os.rmdir(d)
            except OSError:
                break
        if isinstance(e, ExportError) or not isinstance(e, Exception):
            raise
        raise ExportError(f"export failed: {type(e).__name__}: {_one_line(e)}") from e
    shutil.rmtree(staging, ignore_errors=True)
    return final


def dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def _parse_shapes(text):
    if text.strip().lower() in ("", "none"):
        return ()
    shapes = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)x(\d+)x(\d+)\s*", item)
        if not m:
            raise argparse.ArgumentTypeError(f"bad warmup shape {item!r}: want NxHxW, e.g. 3x64x64")
        n, h, w = (int(g) for g in m.groups())
        if n < 2 or h < 1 or w < 1:
            raise argparse.ArgumentTypeError(f"bad warmup shape {item!r}: N >= 2, H, W >= 1")
        shapes.append((n, h, w))
    return tuple(shapes)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {value}")
    return value


def build_parser(prog="export.py"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Export a trained Zooming Slow-Mo model as a SavedModel for stock TensorFlow "
                    "Serving: OUTPUT_DIR/<version>/ with signatures 'serving_default' (uint8 "
                    "frames [batch, N, H, W, 3] -> [batch, 2N-1, 4H, 4W, 3]) and 'predict_float' "
                    "(float32 in [0, 1]).")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="training output dir (its latest checkpoint, else final.weights.h5), a "
                        "checkpoint prefix, a .weights.h5 (with model_config.json beside it) or a "
                        f".keras file (default: {DEFAULT_RUN_DIR}, train.py's default output)")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, metavar="DIR",
                   help=f"TF Serving base path of the model (default: {DEFAULT_OUTPUT_DIR})")
    p.add_argument("--version", type=_positive_int, default=None, metavar="V",
                   help="version number (default: the next one); an existing version is an error")
    p.add_argument("--model-name", default=None,
                   help="model name in the warmup requests (default: the output dir's name)")
    p.add_argument("--warmup-shapes", type=_parse_shapes, default=DEFAULT_WARMUP_SHAPES,
                   metavar="NxHxW[,...]",
                   help="input sizes of the warmup requests, batch 1, one per signature each "
                        "(default: 3x64x64; 'none': no warmup file)")
    p.add_argument("--no-check", action="store_true",
                   help="skip loading the export and running the warmup requests before publishing")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    prog = "export.py"
    t0 = time.perf_counter()
    try:
        if args.checkpoint is None and not os.path.exists(DEFAULT_RUN_DIR):
            raise ModelLoadError(f"no training run at {DEFAULT_RUN_DIR} (train.py's default output "
                                 f"dir, relative to {os.getcwd()}): pass --checkpoint PATH")
        source = resolve_source(DEFAULT_RUN_DIR if args.checkpoint is None else args.checkpoint)
        out_dir = os.path.abspath(args.output_dir)
        if args.version is not None and os.path.exists(os.path.join(out_dir, str(args.version))):
            raise ExportError(f"version {args.version} already exists: "
                              f"{os.path.join(out_dir, str(args.version))} (exports never "
                              f"overwrite; pick another --version or leave it out)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            model, source = load_source(source, deform_impl="gather", return_source=True)
        for w in caught:
            if issubclass(w.category, RuntimeWarning):
                print(f"{prog}: warning: {w.message}", file=sys.stderr)
        path = export_model(model, out_dir, version=args.version, model_name=args.model_name,
                            warmup_shapes=args.warmup_shapes, check=not args.no_check)
    except (ModelLoadError, ExportError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing written", file=sys.stderr)
        return 130
    print(f"exported {source.describe()} -> {path} ({dir_size(path) / 2**20:.1f} MiB, "
          f"{time.perf_counter() - t0:.1f} s); signatures {SIGNATURE_UINT8!r} (uint8) and "
          f"{SIGNATURE_FLOAT!r} (float32), input and output {INPUT_KEY!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
