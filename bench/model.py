"""Whole-model forward time, default size, 4 LR frames of 64x112 (-> 7 frames of 256x448).

Prints, measured in this one run: the forward time per deformable-sampling implementation
(gather, and the compiled custom op when it loads), their ratio, the ratio to the authors'
PyTorch code (about 13 s on this 2-core machine class: a quoted figure, not measured here),
and the deformable convolutions' own arithmetic rate against TensorFlow's float32 matmul rate
for the same GEMMs.

    python bench/model.py [--runs 3] [--frames 4 --height 64 --width 112]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf

import zsm_tf.layers.deformable_conv as dcn_module
from zsm_tf import ZoomingSlowMo
from zsm_tf.ops import custom_op_available, deform_conv2d

AUTHORS_PYTORCH_S = 13.0


def median_time(fn, runs):
    fn()  # warm-up / trace
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def record_deform_calls(model, frames):
    """Shapes of every deformable convolution of one forward pass (run eagerly)."""
    calls = []
    original = dcn_module.deform_conv2d_from_logits

    def recording(x, offset_mask, kernel, bias, **kw):
        calls.append((tuple(x.shape), tuple(kernel.shape), kw["deformable_groups"]))
        return original(x, offset_mask, kernel, bias, **kw)

    dcn_module.deform_conv2d_from_logits = recording
    try:
        model(frames)
    finally:
        dcn_module.deform_conv2d_from_logits = original
    return calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=112)
    args = parser.parse_args()

    frames = tf.random.stateless_uniform([1, args.frames, args.height, args.width, 3], seed=[1, 2])
    impls = ["gather"] + (["custom_op"] if custom_op_available() else [])
    print(f"threads: intra-op {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}; "
          f"custom op {'loaded' if 'custom_op' in impls else 'NOT available'}")
    weights = None
    model_time = {}
    for impl in impls:
        model = ZoomingSlowMo(deform_impl=impl)
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        fn = tf.function(model, jit_compile=False)
        model_time[impl] = median_time(lambda: fn(frames), args.runs)
        print(f"model forward [{impl:>9}]: {model_time[impl]:7.2f} s  "
              f"({model_time[impl] / AUTHORS_PYTORCH_S:.2f}x the authors' ~{AUTHORS_PYTORCH_S:.0f} s)")
    if len(impls) == 2:
        print(f"custom_op / gather model time: {model_time['custom_op'] / model_time['gather']:.2f}")

    # the deformable convolutions alone, and TF's matmul rate on the same GEMMs
    calls = record_deform_calls(ZoomingSlowMo(deform_impl="gather"), frames)
    by_shape = {}
    for c in calls:
        by_shape[c] = by_shape.get(c, 0) + 1
    rng = np.random.default_rng(0)
    total_flops = 0.0
    dcn_time = {impl: 0.0 for impl in impls}
    mm_time = 0.0
    for (xs, ks, dg), count in by_shape.items():
        b, h, w, c = xs
        kh, kw, _, cout = ks
        x = tf.constant(rng.normal(size=xs).astype(np.float32))
        off = tf.constant(rng.normal(size=(b, h, w, 2 * dg * kh * kw)).astype(np.float32))
        mask = tf.constant(rng.uniform(size=(b, h, w, dg * kh * kw)).astype(np.float32))
        kern = tf.constant(rng.normal(size=ks).astype(np.float32))
        flops = 2.0 * b * h * w * kh * kw * c * cout
        total_flops += flops * count
        for impl in impls:
            fn = tf.function(lambda: deform_conv2d(x, off, mask, kern, padding=1,
                                                   deformable_groups=dg, impl=impl))
            dcn_time[impl] += median_time(fn, args.runs) * count
        a = tf.constant(rng.normal(size=(b * h * w, kh * kw * c)).astype(np.float32))
        k2 = tf.reshape(kern, [kh * kw * c, cout])
        mm = tf.function(lambda: tf.matmul(a, k2))
        mm_time += median_time(mm, args.runs) * count
    mm_rate = total_flops / mm_time / 1e9
    print(f"{len(calls)} deformable convolutions per forward, {total_flops / 1e9:.1f} GFLOP in their GEMMs")
    print(f"tf.matmul on the same GEMMs: {mm_time:.2f} s, {mm_rate:.1f} GFLOP/s")
    for impl in impls:
        rate = total_flops / dcn_time[impl] / 1e9
        print(f"deformable convs [{impl:>9}]: {dcn_time[impl]:.2f} s, {rate:.1f} GFLOP/s = "
              f"{rate / mm_rate:.0%} of matmul rate; {dcn_time[impl] / model_time[impl]:.0%} of the model time")


if __name__ == "__main__":
    main()
