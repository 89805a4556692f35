"""Classical motion estimation in stock TF ops: the motion prior of ``ZoomingSlowMo(residual=
"motion")`` (not in the paper).

The frame between two frames ``f0`` and ``f1`` is found by *symmetric* (bidirectional) block
matching, like FFmpeg's ``minterpolate`` with ``me_mode=bidir``: for every pixel ``x`` of the
missing frame we look for the displacement ``d`` with ``f0(x - d) ~= f1(x + d)``. The motion
from ``f0`` to ``f1`` is then ``2d`` and the midpoint is ``(f0(x - d) + f1(x + d)) / 2``: no
holes, no forward splatting.

Search: coarse to fine over an average-pooled pyramid; at each level the estimate of the level
above (x2) is refined by testing a grid of candidate displacements around it, each scored by the
absolute difference of the two warped frames averaged over a block (box filter) plus a small
penalty on the displacement (flat areas stay still); the best candidate wins, then a parabola
through its neighbours' costs gives sub-pixel precision. Warping is bilinear sampling with the
border clamped. Everything is differentiable TF ops (gathers, pools, argmin) that export to a
SavedModel; the estimate is wrapped in ``stop_gradient`` by its users (it is a fixed prior).

Shapes: images NHWC float ``[B, H, W, C]``; displacements ``[B, H, W, 2]`` as (dx, dy) pixels.
"""
from __future__ import annotations

import itertools

import tensorflow as tf


def bilinear_sample(images, dx, dy):
    """``images[b, y + dy, x + dx]`` with bilinear interpolation, coordinates clamped to the image.

    images ``[B, H, W, C]``; dx, dy ``[B, H, W]`` (pixels) -> ``[B, H, W, C]``."""
    shape = tf.shape(images)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    # coordinates in float32 (or float64) even for bfloat16/float16 images: bfloat16 holds
    # integers exactly only up to 256, so pixel positions of a wide frame would round off it
    dtype = images.dtype if images.dtype in (tf.float32, tf.float64) else tf.float32
    ys = tf.cast(tf.range(h), dtype)[None, :, None]
    xs = tf.cast(tf.range(w), dtype)[None, None, :]
    x = tf.clip_by_value(xs + tf.cast(dx, dtype), 0.0, tf.cast(w - 1, dtype))
    y = tf.clip_by_value(ys + tf.cast(dy, dtype), 0.0, tf.cast(h - 1, dtype))
    x0 = tf.floor(x)
    y0 = tf.floor(y)
    wx = x - x0
    wy = y - y0
    x0 = tf.cast(x0, tf.int32)
    y0 = tf.cast(y0, tf.int32)
    x1 = tf.minimum(x0 + 1, w - 1)
    y1 = tf.minimum(y0 + 1, h - 1)
    flat = tf.reshape(images, [-1, c])
    base = (tf.range(b) * h * w)[:, None, None]

    def at(yi, xi):
        return tf.gather(flat, base + yi * w + xi)

    wx = tf.cast(wx, images.dtype)[..., None]
    wy = tf.cast(wy, images.dtype)[..., None]
    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def warp(images, flow, sign=1.0):
    """``images`` sampled at ``x + sign * flow(x)``: ``[B, H, W, C]``, flow ``[B, H, W, 2]``."""
    return bilinear_sample(images, sign * flow[..., 0], sign * flow[..., 1])


def _block_cost(a, b, block):
    """Mean absolute difference over channels, averaged over ``block x block``: [B, H, W]."""
    diff = tf.reduce_mean(tf.abs(a - b), axis=-1, keepdims=True)
    if block > 1:
        diff = tf.nn.avg_pool2d(diff, block, 1, "SAME")
    return diff[..., 0]


def _refine(f0, f1, d, deltas, block, penalty):
    """Best of ``d + delta`` over the candidate ``deltas`` (list of (dx, dy)), per pixel.

    All candidates are warped in one batch (``K`` x the images). Returns the new displacement
    [B, H, W, 2] and the cost volume [B, H, W, K]."""
    shape = tf.shape(f0)
    b, h, w = shape[0], shape[1], shape[2]
    k = len(deltas)
    table = tf.constant(deltas, d.dtype)
    cand = d[None] + table[:, None, None, None, :]             # [K, B, H, W, 2]
    flat = tf.reshape(cand, [k * b, h, w, 2])
    tile = [k, 1, 1, 1]
    cost = _block_cost(warp(tf.tile(f0, tile), flat, -1.0), warp(tf.tile(f1, tile), flat, 1.0),
                       block)
    cost = tf.reshape(cost, [k, b, h, w]) + penalty * tf.reduce_sum(tf.abs(cand), axis=-1)
    costs = tf.transpose(cost, [1, 2, 3, 0])
    best = tf.argmin(costs, axis=-1, output_type=tf.int32)
    return d + tf.gather(table, best), costs


def _subpixel(f0, f1, d, step, block, penalty):
    """Parabola through the costs at ``d - step``, ``d``, ``d + step`` along x, then along y."""
    deltas = [(0.0, 0.0), (-step, 0.0), (step, 0.0), (0.0, -step), (0.0, step)]
    _, c = _refine(f0, f1, d, deltas, block, penalty)
    c0 = c[..., 0]

    def vertex(cm, cp):
        den = cm + cp - 2.0 * c0
        off = tf.math.divide_no_nan(cm - cp, 2.0 * den)
        # only a true minimum (convex, centre the lowest) moves, at most half a step
        ok = tf.logical_and(den > 1e-6, tf.logical_and(c0 <= cm, c0 <= cp))
        return tf.where(ok, tf.clip_by_value(off, -0.5, 0.5), 0.0) * step

    return d + tf.stack([vertex(c[..., 1], c[..., 2]), vertex(c[..., 3], c[..., 4])], axis=-1)


def _grid(radius, step):
    n = int(round(radius / step))
    vals = [i * step for i in range(-n, n + 1)]
    return [(x, y) for y, x in itertools.product(vals, vals)]


def symmetric_flow(f0, f1, levels=3, coarse_radius=3.0, coarse_step=1.0, radius=1.0, step=0.5,
                   block=11, penalty=1e-2):
    """Half the motion from ``f0`` to ``f1``, per pixel of the frame between them.

    f0, f1 ``[B, H, W, C]`` in [0, 1] -> d ``[B, H, W, 2]`` (dx, dy) with
    ``f0(x - d) ~= f1(x + d)``; the motion f0 -> f1 is ``2 d``. ``levels`` pyramid levels
    (x2 average pooling each); at the coarsest level candidates cover ``coarse_radius`` pixels
    (of that level) in steps of ``coarse_step``, at the others ``radius`` in steps of ``step``
    (the default reaches 15 pixels of ``d``, 30 of motion); ``block``: side of the
    matching block; ``penalty``: cost per pixel of displacement (keeps flat areas still).
    """
    f0 = tf.convert_to_tensor(f0)
    f1 = tf.convert_to_tensor(f1, f0.dtype)
    pyr = [(f0, f1)]
    for _ in range(levels - 1):
        a, b = pyr[-1]
        pyr.append((tf.nn.avg_pool2d(a, 2, 2, "SAME"), tf.nn.avg_pool2d(b, 2, 2, "SAME")))
    d = None
    for level in range(levels - 1, -1, -1):
        a, b = pyr[level]
        shape = tf.shape(a)
        if d is None:
            d = tf.zeros(tf.concat([shape[:3], [2]], 0), a.dtype)
            deltas = _grid(coarse_radius, coarse_step)
        else:
            d = 2.0 * tf.image.resize(d, shape[1:3], method="bilinear")
            deltas = _grid(radius, step)
        d, _ = _refine(a, b, d, deltas, block, penalty)
    return _subpixel(f0, f1, d, step, block, penalty)


def upscale_flow(d, scale):
    """Displacements of a ``[B, H, W, 2]`` field at ``scale`` x the resolution:
    ``[B, scale H, scale W, 2]`` (bilinear, values x ``scale``)."""
    shape = tf.shape(d)
    return scale * tf.image.resize(d, [scale * shape[1], scale * shape[2]], method="bilinear")


def midpoint(f0, f1, d):
    """The frame between ``f0`` and ``f1`` given their symmetric displacement ``d``
    (all ``[B, H, W, C]`` / ``[B, H, W, 2]`` at one resolution)."""
    return 0.5 * (warp(f0, d, -1.0) + warp(f1, d, 1.0))
