"""``python train.py`` / ``zsm-tf train``: train Zooming Slow-Mo.

  python train.py                                  # quick start: small model, generated data
  python train.py --config configs/zsm_vimeo.yaml --data vimeo:/data/vimeo_septuplet
  python train.py --data videos:../shared/videos --steps 2000
  python train.py --strategy mirrored --cpu-replicas 2 --config configs/smoke.yaml
  TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
              "task": {"type": "worker", "index": 0}}' python train.py --strategy multi_worker

Rerunning the same command after an interruption (even kill -9) resumes from the last
checkpoint in OUTPUT/checkpoints. See docs/training.md. The work is :class:`zsm_tf.training.Trainer`.

A problem with the command line, the config (missing, not YAML, unknown sections or keys, an
unknown --model key) or the data (e.g. an empty videos: folder) prints one line,
"train.py: error: ...", and exits with status 2; --debug shows the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

from zsm_tf.commands.common import CommandError, add_debug_arg, run_command
from zsm_tf.errors import one_line

PROG = "train.py"


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description="Train Zooming Slow-Mo (space-time video SR).",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (default: built-in quick start, "
                                    "= configs/default.yaml)")
    p.add_argument("--data", help="synthetic (default) | synthetic:N | vimeo:DIR | videos:DIR")
    p.add_argument("--lr-dir", help="vimeo: prepared LR septuplets (else bicubic x4 on the fly)")
    p.add_argument("--strategy", default="default",
                   choices=["default", "one_device", "mirrored", "multi_worker", "tpu"])
    p.add_argument("--cpu-replicas", type=int, default=None,
                   help="split the CPU into N logical devices (mirrored training without GPUs)")
    p.add_argument("--tpu", default=None, help="TPU name / address for --strategy tpu")
    p.add_argument("--steps", type=int, help="train up to this global step")
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--lr-patch", type=int, help="LR patch side (HR = 4x)")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--checkpoint-every", type=int, metavar="K")
    p.add_argument("--val-every", type=int, metavar="K")
    p.add_argument("--val-clips", type=int, metavar="N",
                   help="clips in the fixed validation batch (0: no validation)")
    p.add_argument("--output-dir", default="runs/zsm")
    p.add_argument("--mixed-precision", choices=["bf16", "fp16"])
    p.add_argument("--seed", type=int, help="data seed")
    p.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                   help="model option override, e.g. --model nf=32 --model back_rbs=10")
    p.add_argument("--init-weights", metavar="PATH",
                   help="start from these .weights.h5 (ignored when resuming a checkpoint)")
    p.add_argument("--init", choices=["random", "upsampling", "kaiming"],
                   help="initialisation: random (the reference's), upsampling (starts as "
                        "nearest x4 + frame blending) or kaiming (He-normal convolutions; use "
                        "with --model residual=bicubic, see configs/shipped.yaml)")
    p.add_argument("--jit-compile", action="store_true", help="XLA-compile forward + backward")
    p.add_argument("--deterministic", action="store_true",
                   help="tf.config.experimental.enable_op_determinism() (slower)")
    add_debug_arg(p)
    return p


class SetupError(CommandError):
    """A problem with the command line, the config or the data: one line, exit status 2."""

    def __init__(self, message):
        super().__init__(message, status=2)


def _one_line(e) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return f"missing key {one_line(e)}" if isinstance(e, KeyError) else one_line(e)


def read_config(args):
    """The merged config, or :class:`SetupError` naming the problem (missing or malformed YAML,
    unknown sections or keys, a bad --model item)."""
    import yaml

    if args.config and not os.path.isfile(args.config):
        raise SetupError(f"--config {args.config}: no such file")
    try:
        if args.config:   # syntax first: fails fast, before TensorFlow starts
            with open(args.config) as f:
                data = yaml.safe_load(f)
            if data is not None and not isinstance(data, dict):
                raise SetupError(f"--config {args.config}: not a mapping of sections (model:, data:, train:)")
        from zsm_tf.quiet import quiet_tf

        quiet_tf()   # zsm_tf.training imports TensorFlow: no start-up banner / cuInit line
        return build_config(args)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        raise SetupError(f"--config {args.config}: not valid YAML{at}: "
                         f"{getattr(e, 'problem', None) or _one_line(e)}") from None
    except OSError as e:
        raise SetupError(f"--config {args.config}: {_one_line(e)}") from None
    except (ValueError, TypeError, AttributeError) as e:
        src = f"--config {args.config}: " if args.config else ""
        raise SetupError(f"{src}{_one_line(e)}") from None


def check_model_keys(model_cfg) -> None:
    """Unknown ZoomingSlowMo arguments (from --model or the config's model section)."""
    import inspect

    from zsm_tf.model import ZoomingSlowMo

    params = inspect.signature(ZoomingSlowMo.__init__).parameters
    known = {k for k, p in params.items() if k != "self" and p.kind != p.VAR_KEYWORD}
    unknown = sorted(set(model_cfg) - known)
    if unknown:
        raise SetupError(f"unknown model option{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)} (--model / config 'model:'); known: {', '.join(sorted(known))}")


def _value(text):
    import yaml

    return yaml.safe_load(text)


def build_config(args):
    from zsm_tf.training.config import load_config

    over = {"model": {}, "data": {}, "train": {}}
    if args.data:
        over["data"]["source"] = args.data
    if args.lr_dir:
        over["data"]["lr_dir"] = args.lr_dir
    if args.lr_patch:
        over["data"]["lr_patch"] = args.lr_patch
    if args.val_clips is not None:
        over["data"]["val_clips"] = args.val_clips
    if args.seed is not None:
        over["data"]["seed"] = args.seed
    for key, name in (("steps", "steps"), ("batch_size", "global_batch"),
                      ("learning_rate", "lr"), ("checkpoint_every", "checkpoint_every"),
                      ("val_every", "val_every"), ("mixed_precision", "mixed_precision")):
        v = getattr(args, key)
        if v is not None:
            over["train"][name] = v
    if args.init:
        over["train"]["init"] = args.init
    if args.init_weights:
        over["train"]["init_weights"] = args.init_weights
    if args.jit_compile:
        over["train"]["jit_compile"] = True
    for item in args.model:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise SetupError(f"--model expects KEY=VALUE, got {item!r}")
        over["model"][k.strip()] = _value(v)
    return load_config(args.config, over)


def check_data_source(source) -> None:
    """A ``videos:DIR`` / ``vimeo:DIR`` folder that does not exist, named before TensorFlow works."""
    kind, sep, where = str(source).partition(":")
    if sep and kind in ("videos", "vimeo") and where and not os.path.isdir(where):
        what = "no such folder" if not os.path.exists(where) else "not a folder"
        raise SetupError(f"--data {source}: {what}")


def run(args):
    cfg = read_config(args)
    check_model_keys(cfg["model"])
    check_data_source(cfg["data"]["source"])
    from zsm_tf.commands.progress import heartbeat

    print("Building the model and the data (then the first training step traces the model: 1-3 "
          "minutes on a CPU)", flush=True)   # stdout, with the trainer's log
    phase = _Phase()
    with heartbeat(PROG, phase):
        return _train(args, cfg, phase)


class _Phase:
    """The heartbeat's phrase: building and tracing until the first step of this run ends, then
    training (between the progress lines of every ``train.print_every`` steps)."""

    def __init__(self):
        self.steps = 0

    def __call__(self):
        if not self.steps:
            return "working (building, or tracing the training step)"
        return f"training ({self.steps} steps done in this run)"

    def callback(self):
        import keras

        phase = self

        class StepsSeen(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                phase.steps += 1
        return StepsSeen()


def _train(args, cfg, phase=None):
    # The strategy (and --cpu-replicas) must be set up before TensorFlow runs any op.
    from zsm_tf.training.strategy import make_strategy

    try:
        strategy = make_strategy(args.strategy, args.cpu_replicas, args.tpu)
    except ValueError as e:
        raise SetupError(f"--strategy {args.strategy}: {_one_line(e)}") from None
    if args.deterministic:
        import tensorflow as tf

        # the compiled op's GPU gradient uses float atomics: the task picks the gather path on a
        # GPU (or refuses clearly)
        tf.config.experimental.enable_op_determinism()
    from zsm_tf.training.trainer import Trainer

    try:
        trainer = Trainer(cfg, strategy, args.output_dir, deterministic=args.deterministic)
    except (OSError, ValueError, TypeError) as e:   # the data (empty folder...), the model config
        if os.environ.get("ZSM_TF_DEBUG"):
            raise
        raise SetupError(_one_line(e)) from None
    result = trainer.fit(callbacks=[phase.callback()] if phase else ())
    if trainer.num_workers > 1:
        print(f"worker {trainer.task_id}: finished at step {result['step']}, weights checksum "
              f"{result['checksum']:.6f}", flush=True)
    if trainer.chief and result["losses"]:
        ls = result["losses"]
        k = max(1, min(10, len(ls) // 4))
        print(f"Done: step {result['step']}; loss over the first {k} steps of this run "
              f"{sum(ls[:k]) / k:.4f}, over the last {k} {sum(ls[-k:]) / k:.4f}"
              + (f"; validation PSNR {result['val_psnr']:.2f} dB" if result["val_psnr"] else ""))
    return 0




def main(argv=None) -> int:
    from zsm_tf import interrupts

    # a training step (or the first one's trace) can hold the main thread for long: wait up to
    # a minute for it to end, so that the interrupted step is saved, before leaving anyway
    interrupts.set_context(grace=60.0)
    return run_command(PROG, build_parser(), run, argv, status=2, interrupt_hint=lambda args: (
        f"run the same command again to resume from the last checkpoint in {args.output_dir}/checkpoints"))


if __name__ == "__main__":
    sys.exit(main())
