"""The record of a trained model: a run (or weights) folder's layout and what was measured for it.

A training run (``train.py --output-dir``, default ``runs/zsm``) and a weights folder
(``zsm_tf/weights/``, ``zsm-tf convert-weights``' output) hold::

    model_config.json     the record: the ZoomingSlowMo arguments (``model.get_config()``) and,
                          beside them, the inference settings of these weights
                          (:class:`InferenceSettings`: window, bf16_psnr_cost_db)
    checkpoints/          tf.train checkpoints (training; the model is the attribute "model")
    final.weights.h5      the weights at the end of training (a weights folder: <name>.weights.h5)
    logs/train            TensorBoard: loss, lr
    logs/validation       TensorBoard: psnr, psnr_bicubic, strip

Training writes the record with the window of its clips; ``tools/ship_weights.py`` adds the
measured bfloat16 cost; :func:`zsm_tf.loading.load_model` reads it and hands the settings to the
model (``model.inference_settings``), where :class:`~zsm_tf.inference.SpaceTimeUpscaler` finds
its defaults. Nothing in a record is written by hand. No TensorFlow import here.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Optional

CONFIG_NAME = "model_config.json"
CHECKPOINTS_DIR = "checkpoints"
FINAL_WEIGHTS = "final.weights.h5"
LOGS_DIR = "logs"
DEFAULT_RUN_DIR = os.path.join("runs", "zsm")   # train.py's default --output-dir
DEFAULT_WINDOW = 4   # the window of train.py's 7-frame clips and of the authors' training


@dataclass(frozen=True)
class InferenceSettings:
    """What was measured for a model's weights (None: not recorded).

    ``window``: input frames per training clip (the upscaler's default window);
    ``bf16_psnr_cost_db``: PSNR-Y lost by bfloat16 against float32 on held-out clips
    (:func:`zsm_tf.precision.measure_bf16_cost`; ``precision="auto"`` uses it)."""

    window: Optional[int] = None
    bf16_psnr_cost_db: Optional[float] = None

    @classmethod
    def from_dict(cls, data) -> "InferenceSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known and v is not None})

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def default_window(self) -> int:
        return int(self.window or DEFAULT_WINDOW)


SETTING_KEYS = tuple(f.name for f in fields(InferenceSettings))


def window_of_clip(hr_frames: int) -> int:
    """Input frames of a training clip of ``hr_frames`` HR frames (the odd ones: 7 -> 4)."""
    return (int(hr_frames) + 1) // 2


@dataclass(frozen=True)
class ModelRecord:
    """One ``model_config.json``: ``architecture`` (ZoomingSlowMo arguments) and ``settings``."""

    architecture: dict
    settings: InferenceSettings = InferenceSettings()

    @classmethod
    def read(cls, path) -> "ModelRecord":
        """Raises ``OSError``, ``ValueError`` (not JSON) or ``TypeError`` (not an object)."""
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise TypeError(f"{path} is not a model config (not a JSON object)")
        arch = {k: v for k, v in data.items() if k not in SETTING_KEYS}
        return cls(arch, InferenceSettings.from_dict(data))

    def as_dict(self) -> dict:
        return {**json.loads(json.dumps(self.architecture, default=str)), **self.settings.as_dict()}

    def write(self, path) -> None:
        """Writes ``path`` atomically (a reader sees the old record or the new one)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.as_dict(), indent=1) + "\n")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def with_settings(self, **settings) -> "ModelRecord":
        return replace(self, settings=replace(self.settings, **settings))

    def same_architecture(self, other: "ModelRecord") -> bool:
        """True when both describe the same network (the layer name and deform_impl aside)."""
        def norm(a):
            a = json.loads(json.dumps(a, default=str))
            return {k: v for k, v in a.items() if k not in ("name", "deform_impl")}
        return norm(self.architecture) == norm(other.architecture)


class RunDir:
    """A run or weights folder (see the module doc): its paths, its record."""

    def __init__(self, path=DEFAULT_RUN_DIR):
        self.path = Path(path)

    def __repr__(self):
        return f"RunDir({os.fspath(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def final_weights(self) -> Path:
        return self.path / FINAL_WEIGHTS

    def logs(self, name: str) -> Path:
        """``logs/<name>`` (``train`` or ``validation``)."""
        return self.path / LOGS_DIR / name

    def has_record(self) -> bool:
        return self.config_path.is_file()

    def read_record(self) -> ModelRecord:
        return ModelRecord.read(self.config_path)

    def write_record(self, record: ModelRecord) -> None:
        record.write(self.config_path)

    def record_settings(self, **settings) -> ModelRecord:
        """Adds measured settings to the record (the architecture is kept); returns it."""
        record = self.read_record().with_settings(**settings)
        self.write_record(record)
        return record


def settings_of(model) -> InferenceSettings:
    """The settings a loaded model carries (:func:`zsm_tf.loading.load_model` sets them);
    empty ones for a model built in code or a plain callable."""
    settings = getattr(model, "inference_settings", None)
    return settings if isinstance(settings, InferenceSettings) else InferenceSettings()
