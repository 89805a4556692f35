"""Export for TensorFlow Serving (zsm_tf/commands/export.py) and model loading (zsm_tf/loading.py).

One tiny model (nf=8, groups=1, front_rbs=1, back_rbs=1) is saved as a training run would save it
(model_config.json + tf.train.CheckpointManager checkpoints, trained with the compiled op's
config), exported once, and the export is loaded in a fresh Python process that imports only
TensorFlow.
"""
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from zsm_tf import ZoomingSlowMo
from zsm_tf.commands import export as zexport
from zsm_tf.inference import pad_frames
from zsm_tf.loading import ModelLoadError, load_model, resolve_source, untracked_variables
from zsm_tf.serving import checks, saved_model, signatures
from zsm_tf.serving.session import SessionModel
from zsm_tf.serving.warmup import read_warmup

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(nf=8, groups=1, front_rbs=1, back_rbs=1)
# (B, N, H, W): odd sizes (18x30 -> padded 20x32), batch 2, N = 2..4, edge padding (2x3)
SHAPES = [(1, 2, 18, 30), (2, 3, 8, 12), (1, 4, 5, 7), (1, 2, 2, 3)]


def _tiny_model(deform_impl="gather"):
    keras.utils.set_random_seed(5)
    model = ZoomingSlowMo(**TINY, deform_impl=deform_impl)
    # random init gives outputs ~1e-3: spread them around 0.5 so uint8 rounding is meaningful
    last = model.reconstructor.conv_last
    last.kernel.assign(last.kernel * 100.0)
    last.bias.assign(tf.fill(last.bias.shape, 0.5))
    return model


def _subprocess_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "")
    return env


def _tree_digest(path):
    digest = {}
    for d, _, files in os.walk(path):
        for f in files:
            p = os.path.join(d, f)
            digest[os.path.relpath(p, path)] = (os.path.getmtime(p),
                                                hashlib.sha256(Path(p).read_bytes()).hexdigest())
    return digest


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A training output dir as train.py writes it: config (trained with the compiled op) and
    CheckpointManager checkpoints of tf.train.Checkpoint(model=..., step=...)."""
    model = _tiny_model()
    untracked = untracked_variables(model)
    if untracked:
        pytest.fail(f"tf.train.Checkpoint cannot save {len(untracked)} model variables (e.g. "
                    f"{untracked[0]}): ResidualTrunk's list of blocks is not TF-tracked")
    d = tmp_path_factory.mktemp("run")
    config = {**model.get_config(), "deform_impl": "custom_op"}
    (d / "model_config.json").write_text(json.dumps(config))
    ckpt = tf.train.Checkpoint(model=model, step=tf.Variable(0, dtype=tf.int64))
    manager = tf.train.CheckpointManager(ckpt, str(d / "checkpoints"), max_to_keep=2)
    manager.save()
    ckpt.step.assign(7)
    for v in model.trainable_variables[:3]:  # the latest checkpoint differs from the first
        v.assign(v * 1.01)
    manager.save()
    return d, model


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    d, model = run_dir
    out = tmp_path_factory.mktemp("exp") / "serving" / "zsm"
    rc = zexport.main(["--checkpoint", str(d), "--output-dir", str(out),
                       "--warmup-shapes", "2x12x20,3x8x8"])
    assert rc == 0
    return out, model


def test_export_from_checkpoint_layout(exported):
    out, _ = exported
    assert sorted(os.listdir(out)) == ["1"]  # no staging folder left
    v1 = out / "1"
    assert (v1 / "saved_model.pb").is_file()
    assert (v1 / "variables" / "variables.index").is_file()
    assert (v1 / "assets.extra" / "tf_serving_warmup_requests").is_file()
    ops = checks.graph_ops(str(v1))
    assert "Conv2D" in ops and "GatherV2" in ops
    assert not ops & checks.CUSTOM_OPS
    checks.check_stock_ops(str(v1))


FRESH = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry

    export_dir, out_path, shapes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    loaded = tf.saved_model.load(export_dir)
    rng = np.random.default_rng(0)
    arrays, info = {}, {"signatures": {}}
    for name, fn in loaded.signatures.items():
        spec = fn.structured_input_signature[1]
        info["signatures"][name] = {
            "inputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in spec.items()},
            "outputs": {k: [v.dtype.name, v.shape.as_list()]
                        for k, v in fn.structured_outputs.items()}}
    for i, shape in enumerate(shapes):
        x = rng.integers(0, 256, size=shape + [3], dtype=np.uint8)
        arrays[f"x{i}"] = x
        arrays[f"u{i}"] = loaded.signatures["serving_default"](
            frames=tf.constant(x))["frames"].numpy()
        arrays[f"f{i}"] = loaded.signatures["predict_float"](
            frames=tf.constant(x.astype(np.float32) / 255.0))["frames"].numpy()
    np.savez(out_path, **arrays)
    with open("/proc/self/maps") as f:
        maps = f.read()
    info["zsm_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "zsm_tf")
    info["custom_op_registered"] = op_def_registry.get("ZsmTf>DeformableIm2col") is not None
    info["custom_op_library_mapped"] = "deform_im2col" in maps
    print(json.dumps(info))
""")


def test_fresh_process_serves_both_signatures(exported, tmp_path):
    out, model = exported
    script = tmp_path / "fresh.py"
    script.write_text(FRESH)
    result = tmp_path / "result.npz"
    proc = subprocess.run(
        [sys.executable, "-I", str(script), str(out / "1"), str(result), json.dumps(SHAPES)],
        cwd=tmp_path, env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["zsm_modules"] == []
    assert not info["custom_op_registered"] and not info["custom_op_library_mapped"]
    sigs = info["signatures"]
    assert set(sigs) == {"serving_default", "predict_float"}
    spec = [None, None, None, None, 3]
    assert sigs["serving_default"] == {"inputs": {"frames": ["uint8", spec]},
                                       "outputs": {"frames": ["uint8", spec]}}
    assert sigs["predict_float"] == {"inputs": {"frames": ["float32", spec]},
                                     "outputs": {"frames": ["float32", spec]}}

    with np.load(result) as r:
        for i in range(len(SHAPES)):
            _assert_matches_keras(model, r[f"x{i}"], r[f"u{i}"], r[f"f{i}"])


def test_warmup_records_parse(exported):
    out, _ = exported
    records = read_warmup(str(out / "1"))  # tensorflow-serving-api's PredictionLog protos
    assert len(records) == 4  # 2 shapes x 2 signatures
    seen = []
    for name, signature, inputs in records:
        assert name == "zsm" and list(inputs) == ["frames"]
        arr = inputs["frames"]
        seen.append((signature, arr.dtype.name, arr.shape))
        if arr.dtype == np.float32:
            assert 0.0 <= arr.min() and arr.max() <= 1.0
    assert seen == [("serving_default", "uint8", (1, 2, 12, 20, 3)),
                    ("predict_float", "float32", (1, 2, 12, 20, 3)),
                    ("serving_default", "uint8", (1, 3, 8, 8, 3)),
                    ("predict_float", "float32", (1, 3, 8, 8, 3))]


def _keras_reference(model, x_uint8):
    """The Keras model's output for uint8 frames of any size, float in [0, 1]."""
    b, n, h, w, _ = x_uint8.shape
    ref = model(pad_frames(x_uint8.astype(np.float32) / 255.0)).numpy()[:, :, :4 * h, :4 * w]
    return np.clip(ref, 0.0, 1.0)


def _assert_matches_keras(model, x, u, f):
    b, n, h, w, _ = x.shape
    want_shape = (b, 2 * n - 1, 4 * h, 4 * w, 3)
    assert u.shape == f.shape == want_shape
    assert u.dtype == np.uint8 and f.dtype == np.float32
    ref = _keras_reference(model, x)
    assert 0.01 < ref.std() and (ref == 0).mean() + (ref == 1).mean() < 0.05
    np.testing.assert_allclose(f, ref, atol=1e-5)
    diff = np.abs(u.astype(np.int32) - np.round(ref * 255.0))
    assert diff.max() <= 1, f"shape {want_shape}: off by {diff.max()}"
    assert (diff == 0).mean() > 0.99


SESSION = textwrap.dedent("""
    # TF Serving's way: MetaGraph into a graph, variables restored by the SavedModel's saver,
    # feeds and fetches named by the SignatureDefs; then the warmup file replayed the same way
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    export_dir, out_path, shapes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    graph = tf.Graph()
    sess = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
        handles = [op for op in graph.get_operations() if op.type == "VarHandleOp"]
        inited = sess.run([tf.raw_ops.VarIsInitializedOp(resource=op.outputs[0])
                           for op in handles])

    def run(name, x):
        sig = meta.signature_def[name]
        return sess.run(sig.outputs["frames"].name, {sig.inputs["frames"].name: x})

    rng = np.random.default_rng(1)
    arrays = {}
    for i, shape in enumerate(shapes):
        x = rng.integers(0, 256, size=shape + [3], dtype=np.uint8)
        arrays[f"x{i}"] = x
        arrays[f"u{i}"] = run("serving_default", x)
        arrays[f"f{i}"] = run("predict_float", x.astype(np.float32) / 255.0)
    warmup = []
    for raw in tf.compat.v1.io.tf_record_iterator(
            export_dir + "/assets.extra/tf_serving_warmup_requests"):
        req = prediction_log_pb2.PredictionLog.FromString(raw).predict_log.request
        x = tf.make_ndarray(req.inputs["frames"])
        y = run(req.model_spec.signature_name, x)
        warmup.append([req.model_spec.signature_name, list(x.shape), list(y.shape), y.dtype.name])
    np.savez(out_path, **arrays)
    print(json.dumps({"variables": len(handles), "uninitialized": inited.count(False),
                      "signatures": sorted(meta.signature_def), "warmup": warmup,
                      "zsm_modules": sorted(m for m in sys.modules if m.startswith("zsm_tf"))}))
""")


def test_session_loader_restores_every_variable_and_serves(exported, tmp_path):
    """The loader of tensorflow_model_server and saved_model_cli (TF1 session), in a process
    that imports only TensorFlow: every variable restored, both signatures equal the Keras model,
    every warmup record answered. Fails with 'Could not find variable' on a tf.Module export."""
    out, model = exported
    script = tmp_path / "session.py"
    script.write_text(SESSION)
    result = tmp_path / "result.npz"
    proc = subprocess.run(
        [sys.executable, "-I", str(script), str(out / "1"), str(result), json.dumps(SHAPES)],
        cwd=tmp_path, env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["zsm_modules"] == []
    assert info["uninitialized"] == 0
    assert info["variables"] == len(model.variables)  # each variable once, none duplicated
    assert {"serving_default", "predict_float"} <= set(info["signatures"])
    assert info["warmup"] == [["serving_default", [1, 2, 12, 20, 3], [1, 3, 48, 80, 3], "uint8"],
                              ["predict_float", [1, 2, 12, 20, 3], [1, 3, 48, 80, 3], "float32"],
                              ["serving_default", [1, 3, 8, 8, 3], [1, 5, 32, 32, 3], "uint8"],
                              ["predict_float", [1, 3, 8, 8, 3], [1, 5, 32, 32, 3], "float32"]]
    with np.load(result) as r:
        for i in range(len(SHAPES)):
            _assert_matches_keras(model, r[f"x{i}"], r[f"u{i}"], r[f"f{i}"])


def test_session_model_replays_warmup(exported):
    out, model = exported
    with SessionModel(out / "1") as served:
        assert served.uninitialized_variables() == []
        for _, signature, inputs in read_warmup(str(out / "1")):
            got = served.run(signature, inputs)["frames"]
            x = inputs["frames"]
            if x.dtype == np.float32:
                ref = _keras_reference(model, np.round(x * 255).astype(np.uint8))
                np.testing.assert_allclose(got, ref, atol=1e-5)
        with pytest.raises(KeyError, match="no signature 'nope'"):
            served.run("nope", {})


@pytest.mark.parametrize("signature", ["serving_default", "predict_float"])
def test_saved_model_cli_show_and_run(exported, tmp_path, signature):
    """`saved_model_cli` as a user runs it: show --all, then run for N = 2, 3, 4 and odd H, W."""
    out, model = exported
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    env = _subprocess_env()
    if signature == "serving_default":  # one `show` lists both
        show = subprocess.run(cli + ["show", "--all", "--dir", str(out / "1")], env=env,
                              capture_output=True, text=True, timeout=300)
        assert show.returncode == 0, show.stderr[-3000:]
        for name in ("serving_default", "predict_float"):
            assert f"signature_def['{name}']" in show.stdout
    rng = np.random.default_rng(2)
    for n, h, w in [(2, 9, 13), (3, 7, 5), (4, 5, 11)]:
        x = rng.integers(0, 256, size=(1, n, h, w, 3), dtype=np.uint8)
        feed = x if signature == "serving_default" else x.astype(np.float32) / 255.0
        np.save(tmp_path / "in.npy", feed)
        outdir = tmp_path / f"out{n}"
        proc = subprocess.run(
            cli + ["run", "--dir", str(out / "1"), "--tag_set", "serve", "--signature_def",
                   signature, "--inputs", f"frames={tmp_path / 'in.npy'}", "--outdir",
                   str(outdir)], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = np.load(outdir / "frames.npy")
        ref = _keras_reference(model, x)
        assert got.shape == (1, 2 * n - 1, 4 * h, 4 * w, 3)
        if signature == "predict_float":
            np.testing.assert_allclose(got, ref, atol=1e-5)
        else:
            assert np.abs(got.astype(np.int32) - np.round(ref * 255)).max() <= 1


def test_export_check_catches_unrestored_variables(tmp_path, monkeypatch):
    """The export's own check runs TF Serving's loader: a SavedModel that tracks the Keras
    variable wrappers instead of the captured tf.Variables (what a plain tf.Module does) is
    refused with a one-line message, and nothing is published."""
    def tf_module_export(model, path):
        root = tf.Module()
        root.variables_ = list(model.variables)
        fns = {name: tf.function(fn, input_signature=sig, autograph=False)
               for name, (fn, sig) in signatures.serving_endpoints(model).items()}
        tf.saved_model.save(root, path, signatures={k: f.get_concrete_function()
                                                    for k, f in fns.items()})

    monkeypatch.setattr(saved_model, "write_saved_model", tf_module_export)
    with pytest.raises(checks.ExportError, match="restores no value for") as e:
        saved_model.export_model(_tiny_model(), str(tmp_path / "m"), warmup_shapes=[])
    assert "\n" not in str(e.value)
    assert not (tmp_path / "m").exists()


def test_second_export_is_version_2_and_leaves_version_1(exported, run_dir, capsys):
    out, _ = exported
    d, _ = run_dir
    before = _tree_digest(out / "1")
    assert zexport.main(["--checkpoint", str(d), "--output-dir", str(out), "--no-check",
                         "--warmup-shapes", "none"]) == 0
    assert sorted(os.listdir(out)) == ["1", "2"]
    assert (out / "2" / "saved_model.pb").is_file()
    assert not (out / "2" / "assets.extra").exists()
    assert _tree_digest(out / "1") == before
    capsys.readouterr()
    # an existing version is never overwritten
    assert zexport.main(["--checkpoint", str(d), "--output-dir", str(out), "--version", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("export.py: error: version 1 already exists") and err.count("\n") == 1
    assert sorted(os.listdir(out)) == ["1", "2"] and _tree_digest(out / "1") == before


def test_bad_checkpoint_path_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "exported" / "zsm"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "export.py"), "--checkpoint", str(tmp_path / "no_such_run"),
         "--output-dir", str(out)],
        cwd=tmp_path, env=_subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()  # `import zsm_tf` is lazy: TensorFlow never starts
    assert len(lines) == 1 and lines[0].startswith("export.py: error: "), proc.stderr
    assert "no_such_run" in lines[0]
    assert not (tmp_path / "exported").exists()


def test_gather_model_copies_weights():
    trained = _tiny_model(deform_impl="custom_op")  # built, never called: no compiled op needed
    clone = signatures.gather_model(trained)
    assert clone is not trained and clone.deform_impl == "gather" and not clone.uses_custom_op
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(clone.weights, trained.weights))
    assert signatures.gather_model(clone) is clone


def test_custom_op_in_graph_is_refused(monkeypatch):
    from zsm_tf.ops import custom_op

    assert checks.CUSTOM_OPS == {custom_op.OP_NAME, custom_op.GRAD_OP_NAME}
    monkeypatch.setattr(checks, "graph_ops", lambda d: {"Conv2D", custom_op.OP_NAME})
    with pytest.raises(checks.ExportError, match="cannot run: ZsmTf>DeformableIm2col$"):
        checks.check_stock_ops("unused")


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    def boom(model, path):
        os.makedirs(os.path.join(path, "variables"))
        raise RuntimeError("disk full\nsecond line")

    monkeypatch.setattr(saved_model, "write_saved_model", boom)
    out = tmp_path / "a" / "b"
    with pytest.raises(checks.ExportError, match="export failed: RuntimeError: disk full$"):
        saved_model.export_model(object(), str(out))
    assert not (tmp_path / "a").exists()
    out.mkdir(parents=True)
    (out / "1").mkdir()
    with pytest.raises(checks.ExportError):
        saved_model.export_model(object(), str(out))
    assert sorted(os.listdir(out)) == ["1"]


@pytest.mark.parametrize("h,w", [(18, 30), (8, 12), (5, 7), (2, 3), (1, 1), (4, 6), (3, 2)])
def test_pad_to_multiple_matches_pad_frames(h, w):
    x = np.random.default_rng(h * 100 + w).random((1, 2, h, w, 3), dtype=np.float32)
    got = signatures.pad_to_multiple(tf.constant(x)).numpy()
    np.testing.assert_array_equal(got, pad_frames(x))


def test_load_model_sources(tmp_path):
    model = _tiny_model()
    config = model.get_config()

    def same_weights(other):
        assert len(other.weights) == len(model.weights)
        for a, b in zip(other.weights, model.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)

    # .weights.h5 with model_config.json beside it, and with <name>.json
    a = tmp_path / "a"
    a.mkdir()
    model.save_weights(str(a / "m.weights.h5"))
    (a / "model_config.json").write_text(json.dumps({**config, "deform_impl": "custom_op"}))
    loaded = load_model(str(a / "m.weights.h5"), deform_impl="gather")
    assert loaded.deform_impl == "gather"
    same_weights(loaded)
    b = tmp_path / "b"
    b.mkdir()
    model.save_weights(str(b / "zsm.weights.h5"))
    (b / "zsm.json").write_text(json.dumps(config))
    assert resolve_source(str(b / "zsm.weights.h5")).config_path == str(b / "zsm.json")
    # training output dir with final.weights.h5 only
    (b / "model_config.json").write_text(json.dumps(config))
    model.save_weights(str(b / "final.weights.h5"))
    assert resolve_source(str(b)).weights == str(b / "final.weights.h5")
    # .keras archive
    model.save(str(tmp_path / "m.keras"))
    loaded = load_model(str(tmp_path / "m.keras"), "gather")
    assert loaded.deform_impl == "gather"
    same_weights(loaded)

    # errors: one line, our exception
    c = tmp_path / "c"
    c.mkdir()
    model.save_weights(str(c / "x.weights.h5"))
    bad = {str(c / "x.weights.h5"): "no model config",
           str(tmp_path / "missing"): "no such file or directory",
           str(tmp_path / "empty_dir_that_exists"): "not a training output dir",
           str(tmp_path / "notes.txt"): "unsupported model path"}
    (tmp_path / "empty_dir_that_exists").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    for path, msg in bad.items():
        with pytest.raises(ModelLoadError, match=msg) as e:
            load_model(path)
        assert "\n" not in str(e.value)
    # weights of another model size
    (c / "model_config.json").write_text(json.dumps({**config, "nf": 16}))
    with pytest.raises(ModelLoadError, match="cannot load the weights") as e:
        load_model(str(c / "x.weights.h5"))
    assert "\n" not in str(e.value)


def test_serving_config_files_parse():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

    model_server_config_pb2 = pytest.importorskip(
        "tensorflow_serving.config.model_server_config_pb2")
    cfg = text_format.Parse((ROOT / "serving" / "models.config").read_text(),
                            model_server_config_pb2.ModelServerConfig())
    (entry,) = cfg.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == ("zsm", "/models/zsm",
                                                                   "tensorflow")

    # BatchingParameters (tensorflow_serving/servables/tensorflow/session_bundle_config.proto) is
    # not in the pip package: the same fields, built here, to check the file's syntax and names
    pool = descriptor_pool.DescriptorPool()
    from google.protobuf import wrappers_pb2

    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    f = descriptor_pb2.FileDescriptorProto(name="bp.proto", package="t", syntax="proto3",
                                           dependency=["google/protobuf/wrappers.proto"])
    m = f.message_type.add(name="BatchingParameters")
    fd = descriptor_pb2.FieldDescriptorProto
    for num, name, kind in [(1, "max_batch_size", "Int64Value"),
                            (2, "batch_timeout_micros", "Int64Value"),
                            (3, "max_enqueued_batches", "Int64Value"),
                            (4, "num_batch_threads", "Int64Value"),
                            (5, "thread_pool_name", "StringValue")]:
        m.field.add(name=name, number=num, type=fd.TYPE_MESSAGE, label=fd.LABEL_OPTIONAL,
                    type_name=f".google.protobuf.{kind}")
    m.field.add(name="allowed_batch_sizes", number=6, type=fd.TYPE_INT64, label=fd.LABEL_REPEATED)
    m.field.add(name="pad_variable_length_inputs", number=7, type=fd.TYPE_BOOL,
                label=fd.LABEL_OPTIONAL)
    pool.Add(f)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.BatchingParameters"))
    params = text_format.Parse((ROOT / "serving" / "batching_parameters.txt").read_text(), cls())
    sizes = list(params.allowed_batch_sizes)
    assert sizes == sorted(sizes) and sizes[-1] == params.max_batch_size.value
    assert not params.pad_variable_length_inputs


def test_residual_model_exports_with_its_skip(tmp_path):
    """The bicubic skip (ResizeBicubic, a stock op) survives the export: predict_float equals the
    Keras model, clipped to [0, 1]."""
    model = ZoomingSlowMo(**TINY, residual="bicubic", deform_impl="gather")
    rng = np.random.default_rng(4)
    for var in model.variables:
        var.assign(rng.normal(scale=0.05, size=var.shape))
    path = saved_model.export_model(model, str(tmp_path / "res"), warmup_shapes=[], check=False)
    frames = rng.uniform(size=(1, 3, 8, 12, 3)).astype(np.float32)
    served = tf.saved_model.load(path).signatures["predict_float"](frames=tf.constant(frames))
    np.testing.assert_allclose(served["frames"].numpy(), np.clip(model(frames).numpy(), 0, 1),
                               atol=1e-5)
