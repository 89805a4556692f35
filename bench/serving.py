"""One ``serving_default`` call through TF Serving's loader vs the Keras model, in one run.

Exports a full-size ZoomingSlowMo (nf=64, groups=8, 5 + 40 residual blocks, random weights: the
time does not depend on them) with ``zsm_tf.serving.export_model``, then in separate child
processes (so that each peak RSS is its own):

- ``session``: ``tf.compat.v1.saved_model.loader.load`` (what ``tensorflow_model_server`` and
  ``saved_model_cli`` do) and one uint8 request of 4 frames (default 180x320 -> 7 x 720x1280);
- ``keras``: the Keras model with the compiled deformable op (``deform_impl="auto"``), the same
  frames as float32.

Each child runs one warm-up call and then times ``--runs`` calls; prints seconds per call, peak
RSS and the ratios.

    python bench/serving.py [--frames 4 --height 180 --width 320] [--runs 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, resource, sys, time
import numpy as np
mode, path, n, h, w, runs = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
x = np.random.default_rng(0).integers(0, 256, size=(1, n, h, w, 3), dtype=np.uint8)
if mode == "session":
    from zsm_tf.serving.session import SessionModel
    model = SessionModel(path)
    call = lambda: model.run("serving_default", {"frames": x})["frames"]
else:
    import tensorflow as tf
    from zsm_tf.loading import load_model
    from zsm_tf.ops import custom_op_available
    model = load_model(path, deform_impl="auto")
    xf = tf.constant(x.astype(np.float32) / 255.0)
    call = lambda: model(xf, training=False).numpy()
    if not model.uses_custom_op:
        print("warning: the compiled op is not loaded; the Keras model runs the gather path",
              file=sys.stderr)
out = call()
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    out = call()
    times.append(time.perf_counter() - t0)
print(json.dumps({"s": float(np.median(times)), "shape": list(out.shape),
                  "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def child(mode, path, args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, path, str(args.frames),
                           str(args.height), str(args.width), str(args.runs)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{mode} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()

    import keras

    from zsm_tf import ZoomingSlowMo
    from zsm_tf.serving import export_model

    with tempfile.TemporaryDirectory() as tmp:
        keras.utils.set_random_seed(0)
        model = ZoomingSlowMo(deform_impl="gather")
        model(keras.ops.zeros((1, 2, 8, 8, 3)))
        t0 = time.perf_counter()
        path = export_model(model, os.path.join(tmp, "zsm"), warmup_shapes=[(2, 16, 16)])
        t_export = time.perf_counter() - t0
        weights = os.path.join(tmp, "w", "m.weights.h5")
        os.makedirs(os.path.dirname(weights))
        model.save_weights(weights)
        with open(os.path.join(tmp, "w", "model_config.json"), "w") as f:
            json.dump({**model.get_config(), "deform_impl": "auto"}, f)
        del model
        session = child("session", path, args)
        keras_run = child("keras", weights, args)
    n, h, w = args.frames, args.height, args.width
    print(f"full-size model, {n} frames of {h}x{w} -> {2 * n - 1} x {4 * h}x{4 * w}, "
          f"median of {args.runs} call(s) after one warm-up; export took {t_export:.0f} s")
    print(f"{'':34s} {'s/call':>8s} {'peak RSS':>9s}")
    print(f"{'TF Serving session loader (uint8)':34s} {session['s']:8.2f} "
          f"{session['rss_gb']:7.2f} GB")
    print(f"{'Keras model, compiled op':34s} {keras_run['s']:8.2f} {keras_run['rss_gb']:7.2f} GB")
    print(f"session / keras: time {session['s'] / keras_run['s']:.2f}x, "
          f"peak RSS {session['rss_gb'] / keras_run['rss_gb']:.2f}x")


if __name__ == "__main__":
    main()
