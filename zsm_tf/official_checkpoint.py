"""Import of the authors' published weights (PyTorch ``LunaTokis`` state_dict).

``load_official_state_dict(model, state_dict)`` copies every tensor into a :class:`ZoomingSlowMo`
(conv weights OIHW -> HWIO); :func:`convert_file` does it from a file (the library behind
``zsm-tf convert-weights IN OUT.weights.h5``):
``.pth``/``.pt`` (needs torch: ``pip install zsm-tf[convert]``) or ``.npz`` (name -> array).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from zsm_tf.errors import one_line


class StateDictMismatchError(ValueError):
    """The state_dict does not fit the model: lists missing, unexpected and mis-shaped tensors."""


def _to_numpy(value):
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _strip_prefix(state_dict):
    """Drops a ``module.`` prefix left by DataParallel training."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict


def torch_to_keras(name, array, target_shape):
    """Converts one tensor from PyTorch layout to the variable's layout."""
    if array.ndim == 4:  # conv weight [O, I, kh, kw] -> [kh, kw, I, O]
        array = np.transpose(array, (2, 3, 1, 0))
    if tuple(array.shape) != tuple(target_shape):
        return None
    return array


def load_official_state_dict(model, state_dict):
    """Loads the authors' state_dict into ``model`` (a built :class:`ZoomingSlowMo`).

    Args:
      model: the Keras model; its size (nf, groups, front_rbs, back_rbs) must match.
      state_dict: mapping of the authors' tensor names to arrays (numpy or torch) in PyTorch layout.
    Raises:
      StateDictMismatchError naming every missing, unexpected or mis-shaped tensor; nothing is
      assigned in that case.
    """
    state_dict = _strip_prefix(dict(state_dict))
    params = model.torch_params()
    missing = sorted(set(params) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(params))
    converted, misshaped = {}, []
    for name, var in params.items():
        if name not in state_dict:
            continue
        array = _to_numpy(state_dict[name])
        value = torch_to_keras(name, array, var.shape)
        if value is None:
            misshaped.append(f"{name}: got {tuple(array.shape)}, expected (PyTorch layout) "
                             f"{_torch_shape(var.shape)}")
        else:
            converted[name] = value
    if missing or unexpected or misshaped:
        lines = ["the state_dict does not match this ZoomingSlowMo "
                 f"(nf={model.nf}, groups={model.groups}, front_rbs={model.front_rbs}, "
                 f"back_rbs={model.back_rbs})"]
        for title, names in (("missing", missing), ("unexpected", unexpected),
                             ("mis-shaped", misshaped)):
            if names:
                shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
                lines.append(f"{title}: {shown}")
        raise StateDictMismatchError("; ".join(lines))
    for name, var in params.items():
        var.assign(converted[name].astype(var.dtype))
    return model


def _torch_shape(shape):
    shape = tuple(shape)
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape


def infer_config(state_dict):
    """Model size (nf, groups, front_rbs, back_rbs) from the tensor names and shapes."""
    state_dict = _strip_prefix(dict(state_dict))

    def count(prefix):
        idx = {int(k[len(prefix):].split(".")[0]) for k in state_dict if k.startswith(prefix)}
        return max(idx) + 1 if idx else 0

    try:
        nf = int(_to_numpy(state_dict["conv_first.weight"]).shape[0])
        dcn = _to_numpy(state_dict["pcd_align.L1_dcnpack_1.conv_offset_mask.weight"]).shape[0]
    except KeyError as e:
        raise StateDictMismatchError(f"not a Zooming Slow-Mo state_dict: no tensor {e}") from None
    return {"nf": nf, "groups": int(dcn) // 27, "front_rbs": count("feature_extraction."),
            "back_rbs": count("recon_trunk.")}


class CheckpointReadError(ValueError):
    """The checkpoint file exists but cannot be read (truncated, corrupt, not a checkpoint)."""


def read_state_dict(path):
    """Reads ``.npz`` (name -> array) or ``.pth``/``.pt`` (needs torch) into a dict of arrays.

    Raises FileNotFoundError for a missing file, :class:`CheckpointReadError` (one line) for a
    file that cannot be read: truncated, corrupt or not a checkpoint."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if path.endswith(".npz"):
        try:
            with np.load(path) as data:
                sd = {k: data[k] for k in data.files}
        except Exception as e:   # zipfile.BadZipFile, EOFError, ValueError, OSError, zlib.error...
            if "allow_pickle" in str(e):   # never load pickles: they can run code
                raise CheckpointReadError(f"cannot read {path}: it holds Python objects, not plain "
                                          f"arrays; not a checkpoint of name -> array") from None
            raise CheckpointReadError(f"cannot read {path}: truncated or not an .npz of arrays "
                                      f"({one_line(e, 400)})") from None
        if any(k.startswith("sd/") for k in sd):  # the golden vectors' layout
            sd = {k[3:]: v for k, v in sd.items() if k.startswith("sd/")}
        return sd
    if path.endswith((".pth", ".pt")):
        try:
            import torch
        except ImportError:
            raise RuntimeError("reading a .pth checkpoint needs PyTorch: pip install 'zsm-tf[convert]'"
                               " (or convert it to .npz elsewhere)") from None
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:   # RuntimeError, EOFError, UnpicklingError...
            raise CheckpointReadError(f"cannot read {path}: truncated or not a PyTorch checkpoint "
                                      f"({one_line(e, 400)})") from None
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            raise CheckpointReadError(f"{path} holds a {type(sd).__name__}, not a state_dict")
        return {k: _to_numpy(v) for k, v in sd.items()}
    raise ValueError(f"unsupported checkpoint format (want .pth, .pt or .npz): {path}")


class ConfigClashError(ValueError):
    """The output folder's model_config.json describes a different model."""


def check_config_beside(dst, config) -> str:
    """The record path (``model_config.json``) beside ``dst``; refuses (:class:`ConfigClashError`)
    when it exists and describes another model, whose weights would no longer load if it were
    replaced."""
    from zsm_tf.run_dir import ModelRecord, RunDir

    path = RunDir(os.path.dirname(os.path.abspath(dst))).config_path
    if path.exists():
        try:
            old = ModelRecord.read(path)
        except (OSError, ValueError, TypeError):
            old = None
        if old is None or not old.same_architecture(ModelRecord(config)):
            keys = ("nf", "groups", "front_rbs", "back_rbs")
            what = (", ".join(f"{k}={old.architecture.get(k)}" for k in keys) if old else "unreadable")
            raise ConfigClashError(
                f"{path} already describes another model ({what}); it would be overwritten and that "
                f"model's weights would no longer load: write the weights into another folder")
    return os.fspath(path)


AUTHORS_WINDOW = 4   # the authors trained on 7-frame clips: 4 input frames


def convert_file(src, dst, deform_impl="gather"):
    """Converts the authors' checkpoint ``src`` to ``dst`` (``.weights.h5``) and writes the
    model's record beside it (``model_config.json``: the architecture and the authors' training
    window, :mod:`zsm_tf.run_dir`). Returns the model."""
    from zsm_tf.model import ZoomingSlowMo
    from zsm_tf.run_dir import InferenceSettings, ModelRecord

    if not dst.endswith(".weights.h5"):
        raise ValueError(f"output must end in .weights.h5: {dst}")
    sd = read_state_dict(src)
    try:
        config = infer_config(sd)
    except StateDictMismatchError as e:
        raise StateDictMismatchError(f"{src}: {e}") from None
    model = ZoomingSlowMo(**config, deform_impl=deform_impl)
    load_official_state_dict(model, sd)
    config_path = check_config_beside(dst, model.get_config())   # before writing anything
    out_dir = os.path.dirname(os.path.abspath(dst))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".weights.h5", dir=out_dir)
    os.close(fd)
    try:
        model.save_weights(tmp, overwrite=True)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    ModelRecord(model.get_config(), InferenceSettings(window=AUTHORS_WINDOW)).write(config_path)
    return model
