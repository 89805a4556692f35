"""Benchmark of the modulated deformable convolution: compiled custom op vs stock-TF gather path.

    python bench/deform_conv.py [--batch 4 --height 64 --width 112 --channels 64 --groups 8]

Times (median of --runs after a warm-up) the forward and forward+backward (gradients wrt input,
offsets, mask, kernel and bias) of ``deform_conv2d`` (3x3, pad 1, modulated) under ``tf.function``
(no XLA), for each implementation, plus TensorFlow's own float32 matmul of the same GEMM
([B*Ho*Wo, 9*C] x [9*C, Cout]) for reference.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

from zsm_tf.ops import custom_op, winograd
from zsm_tf.ops.deform_conv import deform_conv2d


def median_times(fns, runs):
    """{name: median seconds}; the runs are interleaved so that all see the same machine load."""
    for fn in fns.values():
        fn()  # trace / warm up
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=112)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--cout", type=int, default=64)
    p.add_argument("--groups", type=int, default=8, help="deformable groups")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--impls", default="custom_op,gather")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: TF's default)")
    args = p.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    B, H, W, C = args.batch, args.height, args.width, args.channels
    dg, cout = args.groups, args.cout
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((B, H, W, C)), tf.float32)
    off = tf.constant(rng.standard_normal((B, H, W, 2 * dg * 9)) * 3, tf.float32)
    mask = tf.constant(rng.random((B, H, W, dg * 9)), tf.float32)
    kernel = tf.constant(rng.standard_normal((3, 3, C, cout)) * 0.05, tf.float32)
    bias = tf.zeros([cout])
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "default"
    print(f"x [{B}, {H}, {W}, {C}] NHWC, 3x3, pad 1, dg {dg}, modulated, Cout {cout}, "
          f"{threads} intra-op threads, median of {args.runs}")

    def conv(impl):
        return deform_conv2d(x, off, mask, kernel, bias, padding=1, deformable_groups=dg, impl=impl)

    def make_fwd_bwd(impl):
        @tf.function
        def fwd_bwd():
            with tf.GradientTape() as tape:
                tape.watch([x, off, mask, kernel, bias])
                loss = tf.reduce_sum(tf.square(conv(impl)))
            return [tf.reduce_sum(g) for g in tape.gradient(loss, [x, off, mask, kernel, bias])]
        return lambda: [g.numpy() for g in fwd_bwd()]

    a = tf.constant(rng.standard_normal((B * H * W, 9 * C)), tf.float32)
    b = tf.constant(rng.standard_normal((9 * C, cout)), tf.float32)
    mm = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    fns = {"gemm": lambda: mm().numpy()}
    impls = args.impls.split(",")
    if "custom_op" in impls and not custom_op.custom_op_available():
        print(f"custom_op unavailable: {custom_op.unavailable_reason()}")
        impls.remove("custom_op")
    for impl in impls:
        fwd = tf.function(lambda impl=impl: tf.reduce_sum(conv(impl)))
        fns[f"{impl} fwd"] = lambda fwd=fwd: fwd().numpy()
        fns[f"{impl} fwd+bwd"] = make_fwd_bwd(impl)
    if "custom_op" in impls and winograd.available():   # the fused op, as the upscaler runs it
        def fused():
            with winograd.scope(4, fused_deform=True):
                return tf.reduce_sum(conv("custom_op"))
        fused = tf.function(fused)
        fns["fused fwd"] = lambda: fused().numpy()
    if "custom_op" in impls:  # the sampling ops alone, without the GEMMs
        lib = custom_op.load()
        attrs = dict(kernel_size=[3, 3], padding=[1, 1], deformable_groups=dg)
        grad_cols = tf.ones([B, H, W, 9 * C])
        op_f = tf.function(lambda: tf.reduce_sum(lib.zsm_tf_deformable_im2col(x, off, mask, **attrs)))
        op_b = tf.function(lambda: [tf.reduce_sum(g) for g in lib.zsm_tf_deformable_im2col_grad(
            x, off, mask, grad_cols, **attrs)])
        fns["op fwd"] = lambda: op_f().numpy()
        fns["op bwd"] = lambda: [g.numpy() for g in op_b()]
    t = median_times(fns, args.runs)

    flops = 2 * B * H * W * 9 * C * cout
    print(f"reference GEMM [{B * H * W}, {9 * C}] x [{9 * C}, {cout}] float32: "
          f"{t['gemm'] * 1e3:.1f} ms, {flops / t['gemm'] / 1e9:.1f} GFLOP/s")
    for impl in impls:
        print(f"{impl:>9}: forward {t[impl + ' fwd']:.3f} s, "
              f"forward+backward {t[impl + ' fwd+bwd']:.3f} s")
        if impl == "custom_op":
            print(f"           (sampling ops alone: forward {t['op fwd']:.3f} s, "
                  f"backward {t['op bwd']:.3f} s)")
            if "fused fwd" in t:
                print(f"    fused: forward {t['fused fwd']:.3f} s (ZsmTf>DeformableConv2D, inference: "
                      f"{t['fused fwd'] / t['gemm']:.1f}x the reference GEMM)")
    if "custom_op" in impls and "gather" in impls:
        print(f"gather / custom_op: forward {t['gather fwd'] / t['custom_op fwd']:.1f}x, "
              f"forward+backward {t['gather fwd+bwd'] / t['custom_op fwd+bwd']:.1f}x")


if __name__ == "__main__":
    main()
