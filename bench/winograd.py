"""The Winograd 3x3 convolution against TensorFlow's, on the shipped model's convolution shapes.

    python bench/winograd.py            # 320x180 input: the shapes of one window of the upscaler
    python bench/winograd.py --runs 5

For each shape (batch, LR/HR size, input -> output channels, as the upscaler runs them) prints
the time of TensorFlow's convolution + bias + LeakyReLU (oneDNN where ``zsm_tf`` turns it on, as
the CLI runs it), the same XLA-compiled, and ``ZsmTf>WinogradConv3x3`` with tiles 2, 4 and 6
(the activation fused), each as ms, and tile 6 (the upscaler's) as "direct-equivalent" GFLOP/s
(``2 * pixels * 9 * Cin * Cout`` / time: Winograd does fewer multiplications, so this can pass
the machine's matmul rate),
beside ``tf.matmul``'s rate in the same run, and each Winograd output's largest error relative to
the largest output. All in one process: compare the ratios, not figures from other runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (label, batch, height, width, Cin, Cout) at 320x180 input (the ConvLSTM runs both directions
# stacked on the batch axis; its pyramids stack input and state: batch 4)
SHAPES = (
    ("PCD offset conv, L1", 2, 180, 320, 64, 32),
    ("PCD offset conv3, L1", 2, 180, 320, 32, 32),
    ("DCN offset/mask conv, L1", 2, 180, 320, 32, 108),
    ("PCD offset conv, L2", 2, 90, 160, 64, 32),
    ("pyramid conv, L2", 4, 90, 160, 32, 32),
    ("LSTM gates conv", 2, 180, 320, 64, 128),
    ("upconv2 (2x)", 1, 360, 640, 32, 256),
    ("HRconv (4x)", 1, 720, 1280, 64, 64),
    ("conv_last (4x)", 1, 720, 1280, 64, 3),
)


def timed(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    import zsm_tf  # noqa: F401  (first: it turns oneDNN on before TensorFlow loads, as the CLI does)

    runs = args.runs
    import numpy as np
    import tensorflow as tf
    from speed import machine, matmul_rate

    from zsm_tf.ops import winograd

    if not winograd.available():
        print("the compiled Winograd op is unavailable here")
        return 1
    mm, _ = matmul_rate(tf.float32, runs)
    print(f"machine: {machine()}\ntf.matmul 4096^3 float32: {mm:.0f} GFLOP/s\n")
    head = f"{'convolution':<26}{'shape':>24}{'GFLOP':>7}"
    names = ["TF", "TF+XLA"] + [f"F({t},3)" for t in winograd.TILES]
    for name in names:
        head += f"{name + ' ms':>11}"
    best = winograd.TILES[-1]
    print(head + f"{f'F({best},3) GF/s':>13}{'vs TF':>7}{'vs XLA':>7}"
          + "".join(f"{f'err F{t}':>9}" for t in winograd.TILES))
    for label, b, h, w, c, k in SHAPES:
        rng = np.random.default_rng(b * h + c + k)
        x = tf.constant(rng.normal(size=(b, h, w, c)), tf.float32)
        kernel = tf.constant(rng.normal(size=(3, 3, c, k)) / np.sqrt(9 * c), tf.float32)
        bias = tf.constant(rng.normal(size=k) * 0.1, tf.float32)

        def stock(v):
            return tf.nn.leaky_relu(tf.nn.bias_add(tf.nn.conv2d(v, kernel, 1, "SAME"), bias), 0.1)
        fns = {"tf": tf.function(stock), "xla": tf.function(stock, jit_compile=True)}
        for tile in winograd.TILES:
            fns[tile] = tf.function(lambda v, t=tile: winograd.winograd_conv3x3(v, kernel, bias, t, 0.1))
        want = fns["tf"](x).numpy()
        errs = {t: np.abs(fns[t](x).numpy() - want).max() / np.abs(want).max() for t in winograd.TILES}
        secs = {name: timed(lambda f=f: f(x).numpy(), runs) for name, f in fns.items()}
        g = 2.0 * b * h * w * 9 * c * k / 1e9
        line = f"{label:<26}{f'{b}x{h}x{w} {c}->{k}':>24}{g:7.2f}"
        line += "".join(f"{secs[n] * 1e3:11.1f}" for n in ("tf", "xla", *winograd.TILES))
        line += (f"{g / secs[best]:9.0f} {g / secs[best] / mm:3.0%}{secs['tf'] / secs[best]:7.2f}"
                 f"{secs['xla'] / secs[best]:7.2f}" + "".join(f"{errs[t]:9.1e}" for t in winograd.TILES))
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
