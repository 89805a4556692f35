"""Copy a training run's model into zsm_tf/weights/ as the weights `zsm-tf upscale` loads by
default: ``<name>.weights.h5`` and its record ``model_config.json`` (replacing what is there).

    python tools/ship_weights.py runs/shipped [--name zsm_realclips_small] [--frames 9]
    python tools/ship_weights.py runs/shipped --bf16-cost 0.007   # a cost measured elsewhere

The run's latest checkpoint (else its final.weights.h5) is read with zsm_tf.load_model. The
record (zsm_tf/run_dir.py) is written by code, never by hand: ``window`` is the one training
recorded (the input frames of its clips; ``--window`` for a run from before records); the
bfloat16 cost ``bf16_psnr_cost_db`` is measured here with :func:`zsm_tf.precision.measure_bf16_cost`
on the held-out clips of bench/heldout.py (``--videos``), or given with ``--bf16-cost`` (e.g.
from ``python bench/heldout.py --precision bfloat16`` on a machine with bfloat16 units).

Beside them goes ``training.json``, how the weights were made, read from the run by code:
the training config (``--config``, its text), the steps trained, the validation curve and the
training loss (the run's TensorBoard logs), the wall-clock span of the logged steps, and
``--note`` (e.g. the CPU time, which the logs do not hold).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's zsm_tf, not an installed one
sys.path.insert(0, str(ROOT / "bench"))
WEIGHTS_DIR = ROOT / "zsm_tf" / "weights"


def held_out_clips(videos, frames):
    """The first ``frames`` frames of each held-out clip of bench/heldout.py, mod-cropped."""
    from heldout import HELD_OUT

    from zsm_tf.evaluation import mod_crop
    from zsm_tf.io import open_source

    clips = []
    for name in HELD_OUT:
        with open_source(Path(videos) / name) as src:
            clips.append([mod_crop(f) for f in islice(iter(src), frames)])
    return clips


def training_history(run) -> dict:
    """{steps, validation: [[step, psnr, base psnr]], validation_new_frames: [[step, psnr of the
    interpolated frames]] (runs that logged it), loss: [[step, loss]] every 10th step,
    wall_seconds} from a run dir's TensorBoard logs (logs/train, logs/validation); {} without."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    run = Path(run)
    run = run if run.is_dir() else run.parent
    while run.name in ("checkpoints",) and run.parent != run:
        run = run.parent
    scalars, times = {}, []
    for part in ("train", "validation"):
        for f in sorted((run / "logs" / part).glob("events.out.tfevents.*")):
            for rec in tf.data.TFRecordDataset(str(f)):
                e = event_pb2.Event.FromString(rec.numpy())
                for v in e.summary.value:
                    if v.tag in ("loss", "psnr", "psnr_bicubic", "psnr_new"):
                        value = float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else v.simple_value
                        scalars.setdefault(v.tag, {})[int(e.step)] = round(value, 5)
                        if part == "train":
                            times.append(e.wall_time)
    if not scalars:
        return {}
    loss = scalars.get("loss", {})
    psnr, base = scalars.get("psnr", {}), scalars.get("psnr_bicubic", {})
    new = scalars.get("psnr_new", {})
    return {"steps": max(loss) if loss else None,
            "validation": [[s, psnr[s], base.get(s)] for s in sorted(psnr)],
            **({"validation_new_frames": [[s, new[s]] for s in sorted(new)]} if new else {}),
            "loss": [[s, loss[s]] for s in sorted(loss) if s % 10 == 0],
            "wall_seconds": round(max(times) - min(times), 1) if len(times) > 1 else None}


def ship(model, record, dest, name) -> Path:
    """Writes ``<name>.weights.h5`` and the record into ``dest`` (replacing any weights there)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        h5 = Path(tmp) / f"{name}.weights.h5"
        model.save_weights(os.fspath(h5))
        for old in dest.glob("*.weights.h5"):
            old.unlink()
        os.replace(h5, dest / h5.name)
    from zsm_tf.run_dir import RunDir

    RunDir(dest).write_record(record)
    return dest / h5.name


def main(argv=None):
    from heldout import DEFAULT_VIDEOS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="training output dir, checkpoint or .weights.h5")
    parser.add_argument("--name", default="zsm_realclips_small")
    parser.add_argument("--window", type=int,
                        help="the training window, for a run whose record has none")
    parser.add_argument("--bf16-cost", type=float, help="PSNR-Y cost of bfloat16 in dB, measured "
                                                        "elsewhere (default: measure it here)")
    parser.add_argument("--videos", default=str(DEFAULT_VIDEOS),
                        help="folder of the held-out clips for the bfloat16 measurement")
    parser.add_argument("--frames", type=int, default=9, help="HR frames per held-out clip")
    parser.add_argument("--config", help="the training config file, recorded in training.json")
    parser.add_argument("--note", default="", help="a line for training.json (e.g. the CPU time)")
    parser.add_argument("--dest", default=str(WEIGHTS_DIR), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from zsm_tf.loading import load_model, read_record, resolve_source
    from zsm_tf.precision import measure_bf16_cost

    source = resolve_source(args.run)
    model = load_model(args.run)
    record = read_record(source)
    window = record.settings.window or args.window
    if window is None:
        parser.error(f"{source.config_path} records no training window: pass --window")
    cost = args.bf16_cost
    if cost is None:
        cost = measure_bf16_cost(model, held_out_clips(args.videos, args.frames), window=window)
    record = record.with_settings(window=int(window), bf16_psnr_cost_db=float(cost))
    record = type(record)({**record.architecture, "deform_impl": "auto"}, record.settings)
    path = ship(model, record, Path(args.dest), args.name)
    history = {"run": str(args.run), **training_history(args.run), "note": args.note,
               "config": Path(args.config).read_text() if args.config else None}
    tmp = Path(args.dest) / "training.json.tmp"
    tmp.write_text(json.dumps(history, indent=1) + "\n")
    os.replace(tmp, Path(args.dest) / "training.json")
    print(f"{path}: {model.count_params():,} parameters, record {record.settings.as_dict()}; "
          f"training.json: {history.get('steps')} steps, validation {history.get('validation')}")


if __name__ == "__main__":
    main()
