"""``zsm-tf demo``: one forward pass of the network on generated frames, timed.

Needs no data and no weights (random initialisation unless ``--weights``): it shows that the
install works and how fast the model runs on this machine.
"""
from __future__ import annotations

import sys
import time

from zsm_tf.commands.common import add_debug_arg, parser_for, run_command


def moving_pattern(n, h, w, seed=0):
    """[1, n, h, w, 3] float32 frames of a smooth colour pattern panning by 1.5 px per frame."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    freqs = rng.uniform(0.05, 0.3, size=(3, 2))
    phases = rng.uniform(0, 2 * np.pi, size=3)
    frames = []
    for t in range(n):
        shift = 1.5 * t
        chans = [0.5 + 0.5 * np.sin(fy * yy + fx * (xx + shift) + p)
                 for (fy, fx), p in zip(freqs, phases)]
        frames.append(np.stack(chans, -1))
    return np.stack(frames)[None].astype(np.float32)


PROG = "zsm-tf demo"


def build_parser():
    parser = parser_for(PROG, __doc__)
    parser.add_argument("--frames", type=int, default=4, help="input frames N (default 4)")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=112)
    parser.add_argument("--runs", type=int, default=2, help="timed runs after a warm-up")
    parser.add_argument("--weights", help="a .weights.h5 of the default-size model")
    parser.add_argument("--deform-impl", default="auto", choices=["auto", "gather", "custom_op"])
    add_debug_arg(parser)
    return parser


def run(args) -> int:

    import numpy as np
    import tensorflow as tf

    from zsm_tf.model import ZoomingSlowMo

    model = ZoomingSlowMo(deform_impl=args.deform_impl)
    if args.weights:
        model.load_weights(args.weights)
    frames = tf.constant(moving_pattern(args.frames, args.height, args.width))
    forward = tf.function(model, reduce_retracing=True)
    print(f"ZoomingSlowMo: {model.count_params():,} parameters, deformable sampling: "
          f"{'custom op' if model.uses_custom_op else 'tf.gather'}")
    print(f"input {tuple(frames.shape)} -> ", end="", flush=True)
    out = forward(frames)  # warm-up (traces the graph)
    print(f"output {tuple(out.shape)}")
    times = []
    for _ in range(max(1, args.runs)):
        t0 = time.perf_counter()
        out = forward(frames)
        out.numpy()
        times.append(time.perf_counter() - t0)
    print(f"forward: {np.median(times):.2f} s (median of {len(times)}; "
          f"{np.median(times) / out.shape[1]:.2f} s per output frame)")
    return 0


def main(argv=None) -> int:
    return run_command(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
