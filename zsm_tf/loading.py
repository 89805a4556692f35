"""Loading a trained :class:`~zsm_tf.model.ZoomingSlowMo` from whatever training or conversion left.

``load_model(path, deform_impl="auto")`` accepts:

* a **training output dir** (``train.py``'s ``--output-dir``, default ``runs/zsm``): the model
  config from ``model_config.json``, the weights from the latest checkpoint in ``checkpoints/``
  (``tf.train.CheckpointManager``; the model is the checkpoint's ``model`` attribute), else
  from ``final.weights.h5``. A folder of runs (no ``model_config.json`` but sub-folders that have
  one) means its most recently modified run;
* a **checkpoints folder** (``.../checkpoints``: its latest checkpoint) or one **checkpoint
  prefix** (``.../checkpoints/ckpt-12``), config from the ``model_config.json`` of the run;
* a **``.weights.h5``** file (``model.save_weights``, ``zsm-tf convert-weights``): config from
  ``model_config.json`` beside it, else ``<name>.json`` (``foo.weights.h5`` -> ``foo.json``);
* a **``.keras``** file (``model.save``).

:func:`shipped_weights` names the weights shipped in ``zsm_tf/weights/`` (the commands' default).

``config=`` (a JSON file of ``ZoomingSlowMo`` arguments) overrides where the config comes from,
e.g. for a ``.weights.h5`` with no config beside it (``zsm-tf upscale --config``).

The model is always rebuilt from its config with the requested ``deform_impl`` (the one it was
trained with does not matter: the implementations share weights), so e.g. ``"gather"`` gives a
model free of the compiled op. Every problem with the path or its contents raises
:class:`ModelLoadError` with a one-line message.
"""
from __future__ import annotations

import glob
import json
import os
import warnings
import zipfile
from dataclasses import dataclass, replace

from zsm_tf.errors import one_line as _one_line
from zsm_tf.run_dir import (
    CHECKPOINTS_DIR,
    CONFIG_NAME,
    DEFAULT_RUN_DIR,
    FINAL_WEIGHTS,
    ModelRecord,
    RunDir,
)

_SIZE_KEYS = ("nf", "groups", "front_rbs", "back_rbs")
SHIPPED_WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


class ModelLoadError(Exception):
    """A model could not be loaded from the given path; the message is one line."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's config and weights are: ``kind`` is ``"checkpoint"`` (``weights`` is a
    checkpoint prefix), ``"weights_h5"`` or ``"keras"`` (``config_path`` is the archive itself)."""

    kind: str
    weights: str
    config_path: str
    fallback: str | None = None  # the run's final.weights.h5, for a checkpoint of a run

    def describe(self) -> str:
        names = {"checkpoint": "checkpoint", "weights_h5": "weights", "keras": "Keras archive"}
        return f"{names[self.kind]} {self.weights}"


def _latest_checkpoint(ckpt_dir):
    """Latest checkpoint prefix of a CheckpointManager folder, or None."""
    if not os.path.isdir(ckpt_dir):
        return None
    import tensorflow as tf

    prefix = tf.train.latest_checkpoint(ckpt_dir)
    if prefix and os.path.exists(prefix + ".index"):
        return prefix
    # no (or a stale) 'checkpoint' state file: the highest-numbered ckpt-N.index
    best = None
    for name in os.listdir(ckpt_dir):
        if name.endswith(".index"):
            stem = name[:-len(".index")]
            num = stem.rsplit("-", 1)[-1]
            key = int(num) if num.isdigit() else -1
            if best is None or key > best[0]:
                best = (key, os.path.join(ckpt_dir, stem))
    return best[1] if best else None


def _find_run_config(start):
    """``model_config.json`` in ``start`` or its parent (a checkpoints folder's run)."""
    for d in (start, os.path.dirname(start)):
        cand = os.path.join(d, CONFIG_NAME)
        if os.path.isfile(cand):
            return cand
    return None


def _latest_run(parent):
    """The most recently modified sub-folder of ``parent`` that holds a model config."""
    runs = []
    for name in os.listdir(parent):
        d = os.path.join(parent, name)
        if os.path.isfile(os.path.join(d, CONFIG_NAME)):
            runs.append((os.path.getmtime(d), d))
    return max(runs)[1] if runs else None


def _run_dir_source(path):
    run = RunDir(path)
    config = os.fspath(run.config_path)
    prefix = _latest_checkpoint(os.fspath(run.checkpoints))
    final = os.fspath(run.final_weights)
    if prefix:
        return ModelSource("checkpoint", prefix, config,
                           fallback=final if os.path.isfile(final) else None)
    if os.path.isfile(final):
        return ModelSource("weights_h5", final, config)
    raise ModelLoadError(f"no weights in training output dir {path}: no checkpoint in "
                         f"{CHECKPOINTS_DIR}/ and no {FINAL_WEIGHTS}")


def resolve_source(path, config=None) -> ModelSource:
    """Finds the config and weights that ``path`` names (see the module doc); no TF import unless
    a checkpoints folder has to be read. ``config``: a JSON config file to use instead of the
    one found with the weights. Raises :class:`ModelLoadError`."""
    if config is not None:
        if not os.path.isfile(config):
            raise ModelLoadError(f"{config}: no such config file")
        if os.fspath(path or "").endswith(".weights.h5") and os.path.isfile(path):
            return ModelSource("weights_h5", os.path.normpath(os.fspath(path)), os.fspath(config))
        source = resolve_source(path)
        return source if source.kind == "keras" else replace(source, config_path=os.fspath(config))
    if path is None or str(path).strip() == "":
        raise ModelLoadError("no model path given")
    path = os.path.normpath(os.fspath(path))
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, CONFIG_NAME)):
            return _run_dir_source(path)
        prefix = _latest_checkpoint(path)
        if prefix:  # a checkpoints folder
            config = _find_run_config(path)
            if config is None:
                raise ModelLoadError(f"no {CONFIG_NAME} for the checkpoints in {path} (looked in "
                                     f"it and its parent)")
            final = os.path.join(os.path.dirname(config), FINAL_WEIGHTS)
            return ModelSource("checkpoint", prefix, config,
                               fallback=final if os.path.isfile(final) else None)
        run = _latest_run(path)
        if run:
            return _run_dir_source(run)
        raise ModelLoadError(f"{path} is not a training output dir: no {CONFIG_NAME}, no "
                             f"checkpoints, no run sub-folder")
    if os.path.isfile(path + ".index"):  # a checkpoint prefix, e.g. runs/zsm/checkpoints/ckpt-3
        config = _find_run_config(os.path.dirname(path))
        if config is None:
            raise ModelLoadError(f"no {CONFIG_NAME} for checkpoint {path} (looked beside its "
                                 f"folder and in its parent)")
        return ModelSource("checkpoint", path, config)
    if not os.path.exists(path):
        raise ModelLoadError(f"no such file or directory: {path}")
    if path.endswith(".weights.h5"):
        beside = os.path.join(os.path.dirname(path), CONFIG_NAME)
        named = path[:-len(".weights.h5")] + ".json"
        for config in (beside, named):
            if os.path.isfile(config):
                return ModelSource("weights_h5", path, config)
        raise ModelLoadError(f"no model config for {path}: expected {beside} or {named}")
    if path.endswith(".keras"):
        return ModelSource("keras", path, path)
    hint = (" (the authors' checkpoint: convert it with 'zsm-tf convert-weights')"
            if path.endswith((".pth", ".pt", ".npz")) else "")
    raise ModelLoadError(f"unsupported model path {path}: want a training output dir, a "
                         f"checkpoint, a .weights.h5 or a .keras file{hint}")


def read_record(source: ModelSource) -> ModelRecord:
    """The record (architecture + inference settings) of ``source``; a ``.keras`` archive has
    the architecture only."""
    try:
        if source.kind == "keras":
            with zipfile.ZipFile(source.config_path) as zf:
                data = json.loads(zf.read("config.json"))
            if data.get("class_name") != "ZoomingSlowMo":
                raise ModelLoadError(f"{source.config_path} holds a {data.get('class_name')!r}, "
                                     f"not a ZoomingSlowMo")
            record = ModelRecord(data.get("config", {}))
        else:
            record = ModelRecord.read(source.config_path)
    except ModelLoadError:
        raise
    except TypeError:   # valid JSON, not an object
        raise ModelLoadError(f"{source.config_path} is not a model config (not a JSON object)") from None
    except (OSError, ValueError, KeyError, AttributeError, zipfile.BadZipFile) as e:
        raise ModelLoadError(f"cannot read the model config {source.config_path}: "
                             f"{_one_line(e)}") from None
    return record


def read_config(source: ModelSource) -> dict:
    """The ZoomingSlowMo constructor arguments (``nf``, ``groups``, ...) of ``source``."""
    return _model_kwargs(source, read_record(source).architecture)


def _model_kwargs(source, config) -> dict:
    if isinstance(config.get("config"), dict) and "nf" not in config:  # keras.saving form
        config = config["config"]
    missing = [k for k in _SIZE_KEYS if k not in config]
    if missing:
        raise ModelLoadError(f"{source.config_path} is not a ZoomingSlowMo config: no "
                             f"{', '.join(missing)}")
    kwargs = {k: config[k] for k in _SIZE_KEYS}
    residual = config.get("residual", "none")
    if residual != "none":  # older configs have no key: the authors' network
        kwargs["residual"] = residual
    dtype = config.get("dtype")
    if isinstance(dtype, dict):  # a serialized DTypePolicy
        dtype = (dtype.get("config") or {}).get("name")
    if isinstance(dtype, str) and dtype != "float32":
        kwargs["dtype"] = dtype
    return kwargs


def shipped_weights() -> str:
    """The ``.weights.h5`` shipped in ``zsm_tf/weights/``, or :class:`ModelLoadError`."""
    found = sorted(glob.glob(os.path.join(SHIPPED_WEIGHTS_DIR, "*.weights.h5")))
    if not found:
        raise ModelLoadError(f"no shipped weights in {SHIPPED_WEIGHTS_DIR}; name a model (a "
                             f".weights.h5 from 'zsm-tf convert-weights' or from training)")
    if len(found) > 1:
        raise ModelLoadError(f"several weight files in {SHIPPED_WEIGHTS_DIR} "
                             f"({', '.join(os.path.basename(p) for p in found)}); name one")
    return found[0]


def load_model(path=None, deform_impl="auto", config=None):
    """Returns the trained :class:`~zsm_tf.model.ZoomingSlowMo` that ``path`` names.

    Args:
      path: a training output dir (latest checkpoint, else ``final.weights.h5``), a checkpoints
        folder or prefix, a ``.weights.h5`` (config from ``model_config.json`` beside it or
        ``<name>.json``) or a ``.keras`` file. ``None``: ``runs/zsm`` (train.py's default).
      deform_impl: the deformable-convolution implementation of the returned model.
      config: a JSON file of ZoomingSlowMo arguments to use instead of the one found with
        the weights.
    Raises:
      ModelLoadError (one-line message) for a bad path, config or weights.
    """
    return load_source(resolve_source(DEFAULT_RUN_DIR if path is None else path, config),
                       deform_impl)


def load_source(source: ModelSource, deform_impl="auto", return_source=False):
    """The model of a :class:`ModelSource` (from :func:`resolve_source`), weights loaded;
    with ``return_source``, ``(model, the source actually read)``. The record's inference
    settings (:class:`~zsm_tf.run_dir.InferenceSettings`) are the model's
    ``inference_settings``: the upscaler's defaults."""
    record = read_record(source)
    model = _build(source, record, deform_impl)
    if source.kind == "checkpoint":
        untracked = untracked_variables(model)
        if untracked:
            # tf.train.Checkpoint(model=...) cannot have saved these: the checkpoint is incomplete
            why = (f"{len(untracked)} of the model's variables are not reachable by "
                   f"tf.train.Checkpoint, so checkpoint {source.weights} cannot hold them "
                   f"(e.g. {untracked[0]})")
            if source.fallback:
                warnings.warn(f"{why}; loading {source.fallback} instead", RuntimeWarning,
                              stacklevel=2)
                source = ModelSource("weights_h5", source.fallback, source.config_path)
            else:
                raise ModelLoadError(f"{why}; load a .weights.h5 of the run instead")
    _load_weights(model, source)
    model.inference_settings = record.settings
    return (model, source) if return_source else model


def untracked_variables(model):
    """Paths of the model's variables that TF object tracking (``tf.train.Checkpoint``,
    SavedModel) does not reach from ``model``; Keras' own saving reaches them all."""
    import tensorflow as tf

    reachable = {id(obj) for obj in tf.train.TrackableView(model).descendants()}
    return [v.path for v in model.variables if id(v) not in reachable]


def _build(source, record, deform_impl):
    from zsm_tf.model import ZoomingSlowMo

    kwargs = _model_kwargs(source, record.architecture)
    try:
        return ZoomingSlowMo(**kwargs, deform_impl=deform_impl)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"bad model config in {source.config_path}: {_one_line(e)}") from None


def _load_weights(model, source):
    import tensorflow as tf

    try:
        if source.kind == "checkpoint":
            status = tf.train.Checkpoint(model=model).restore(source.weights)
            status.assert_existing_objects_matched().expect_partial()
        else:
            model.load_weights(source.weights)
    except (tf.errors.OpError, OSError, ValueError, AssertionError, KeyError) as e:
        raise ModelLoadError(f"cannot load the weights of {source.describe()} into a ZoomingSlowMo"
                             f" {json.dumps({k: getattr(model, k) for k in _SIZE_KEYS})}: "
                             f"{_one_line(e)}") from None
