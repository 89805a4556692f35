#!/usr/bin/env python
"""Train Zooming Slow-Mo: ``python train.py --help`` (the command is :mod:`zsm_tf.commands.train`).

  python train.py                                  # quick start: small model, generated data
  python train.py --config configs/zsm_vimeo.yaml --data vimeo:/data/vimeo_septuplet
  python train.py --strategy mirrored --cpu-replicas 2 --config configs/smoke.yaml

Rerunning the same command after an interruption (even kill -9) resumes from the last
checkpoint in OUTPUT/checkpoints. See docs/training.md.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this checkout's zsm_tf, from anywhere

if __name__ == "__main__":
    from zsm_tf import interrupts

    interrupts.install("train.py")   # Ctrl-C / SIGTERM from the start: one line, 130 / 143
    from zsm_tf.commands.train import main

    sys.exit(main())
