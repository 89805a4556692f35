#!/usr/bin/env python
"""Training-step throughput (samples/s) at the paper's patch size.

  python bench/train_step.py                      # default (full-size) model, batch 2
  python bench/train_step.py --batch 16 --strategy mirrored --jit-compile  # on GPUs
  python bench/train_step.py --model nf=16 --model back_rbs=2 --steps 10   # small model

One step = forward of 4 LR frames 32x32 -> 7 HR frames 128x128, Charbonnier loss, backward,
Adam update (the exact step of train.py, zsm_tf.training.trainer). The batch is fixed and
already on the device, so the number measures the model + optimizer, not the input pipeline.
Prints the trace (first step) time and the mean of the timed steps after ``--warmup``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2, help="global batch (paper: 16)")
    p.add_argument("--lr-patch", type=int, default=32)
    p.add_argument("--frames", type=int, default=7)
    p.add_argument("--steps", type=int, default=2, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first")
    p.add_argument("--model", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--strategy", default="default",
                   choices=["default", "one_device", "mirrored"])
    p.add_argument("--cpu-replicas", type=int)
    p.add_argument("--mixed-precision", choices=["bf16", "fp16"])
    p.add_argument("--jit-compile", action="store_true")
    p.add_argument("--no-grappler", action="store_true")
    args = p.parse_args(argv)

    from zsm_tf.training.strategy import make_strategy

    strategy = make_strategy(args.strategy, args.cpu_replicas)
    import tensorflow as tf
    import yaml

    from zsm_tf.training.config import load_config
    from zsm_tf.training.trainer import Trainer

    model = {"nf": 64, "groups": 8, "front_rbs": 5, "back_rbs": 40, "deform_impl": "auto"}
    for item in args.model:
        k, _, v = item.partition("=")
        model[k] = yaml.safe_load(v)
    cfg = load_config(None, {
        "model": model,
        "data": {"lr_patch": args.lr_patch, "frames": args.frames, "val_clips": 0},
        "train": {"global_batch": args.batch, "lr": 4e-4, "periods": [150000] * 4,
                  "mixed_precision": args.mixed_precision, "jit_compile": args.jit_compile,
                  "graph_optimizations": not args.no_grappler, "init_seed": 0}})

    class _Unused:  # the bench feeds a fixed batch; no data source is read
        num_items = None

        def describe(self):
            return "fixed random batch"

    import tempfile

    trainer = Trainer(cfg, strategy, output_dir=tempfile.mkdtemp(prefix="zsm_bench_"),
                      source=_Unused(), verbose=False)
    n = (args.frames + 1) // 2
    h = args.lr_patch
    lr = tf.random.uniform([args.batch, n, h, h, 3], seed=1)
    hr = tf.random.uniform([args.batch, args.frames, 4 * h, 4 * h, 3], seed=2)

    def fn(ctx):
        b = ctx.get_per_replica_batch_size(args.batch)
        i = ctx.input_pipeline_id
        return tf.data.Dataset.from_tensors((lr[i * b:(i + 1) * b], hr[i * b:(i + 1) * b])) \
            .repeat()

    it = iter(strategy.distribute_datasets_from_function(fn))
    step = trainer._make_train_step()
    dev = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    print(f"model {model} ({trainer.model.count_params():,} parameters); "
          f"{strategy.num_replicas_in_sync} replica(s) [{dev[0].device_type}], "
          f"batch {args.batch}, LR {h}x{h} x{n} -> HR {4 * h}x{4 * h} x{args.frames}, "
          f"precision {trainer.policy}, XLA {args.jit_compile}", flush=True)
    t0 = time.perf_counter()
    float(step(it))
    print(f"first step (trace + run): {time.perf_counter() - t0:.1f} s", flush=True)
    for _ in range(args.warmup):
        float(step(it))
    import resource

    def cpu_s():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    times = []
    c0 = cpu_s()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        float(step(it))
        times.append(time.perf_counter() - t0)
    mean = sum(times) / len(times)
    print(f"step: {mean:.3f} s (min {min(times):.3f}) -> {args.batch / mean:.2f} samples/s "
          f"({args.steps} timed steps); {(cpu_s() - c0) / args.steps:.2f} CPU-s per step "
          f"(steadier than wall time on a shared machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
