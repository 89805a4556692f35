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


def known_dims(x):
    """``x``'s shape as a list: Python ints where known while tracing (no graph ops: the
    upscaler traces with the frame size known), scalar tensors where not."""
    dynamic = None
    out = []
    for i, n in enumerate(x.shape):
        if n is None:
            if dynamic is None:
                dynamic = tf.unstack(tf.shape(x))
            n = dynamic[i]
        out.append(n)
    return out


def bilinear_sample(images, dx, dy):
    """``images[b, y + dy, x + dx]`` with bilinear interpolation, coordinates clamped to the image.

    images ``[B, H, W, C]``; dx, dy ``[B, H, W]`` (pixels) -> ``[B, H, W, C]``."""
    b, h, w, c = known_dims(images)
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


def _inside(images, d, sign):
    """How much ``x + sign * d(x)`` lies inside the frame: 1 inside, falling to 0 one pixel
    beyond the border (sampling clamps there, so a sample outside is not evidence): [B, H, W]."""
    _, hi, wi, _ = known_dims(images)
    h, w = tf.cast(hi, d.dtype), tf.cast(wi, d.dtype)
    ys = tf.cast(tf.range(hi), d.dtype)[None, :, None]
    xs = tf.cast(tf.range(wi), d.dtype)[None, None, :]
    x = xs + sign * d[..., 0]
    y = ys + sign * d[..., 1]
    out = tf.nn.relu(-x) + tf.nn.relu(x - (w - 1)) + tf.nn.relu(-y) + tf.nn.relu(y - (h - 1))
    return tf.nn.relu(1.0 - out)


# a candidate whose block has (almost) no pixel matched inside both frames costs this: ties keep
# the first candidate, the estimate of the level above (the field is extrapolated to the border)
_UNSEEN = 1e3


def _pooled_cost(terms, block):
    """The block cost from the per-pixel terms ``[B, H, W, 2]`` (diff * valid, valid): the
    average of diff over the valid part of each ``block x block`` block, plus a small cost for the
    part that is not; ``_UNSEEN`` where (almost) nothing of the block is valid. [B, H, W]."""
    pooled = tf.nn.avg_pool2d(terms, block, 1, "SAME")
    num, den = pooled[..., 0], pooled[..., 1]
    return tf.where(den > 0.05, tf.math.divide_no_nan(num, den) + 0.05 * (1.0 - den), _UNSEEN)


def _block_cost(a, b, block, valid=None):
    """Mean absolute difference over channels, averaged over ``block x block``: [B, H, W].

    ``valid`` [B, H, W]: weight of each pixel (both samples inside the frames); the average is
    over the valid part of the block, plus a small cost for the part that is not."""
    diff = tf.reduce_mean(tf.abs(a - b), axis=-1, keepdims=True)
    if valid is None:
        if block > 1:
            diff = tf.nn.avg_pool2d(diff, block, 1, "SAME")
        return diff[..., 0]
    v = valid[..., None]
    return _pooled_cost(tf.concat([diff * v, v], -1), block)


def _refine(f0, f1, d, deltas, block, penalty):
    """Best of ``d + delta`` over the candidate ``deltas`` (list of (dx, dy)), per pixel.

    All candidates are warped in one batch (``K`` x the images). Returns the new displacement
    [B, H, W, 2] and the cost volume [B, H, W, K]."""
    b, h, w, _ = known_dims(f0)
    k = len(deltas)
    table = tf.constant(deltas, d.dtype)
    cand = d[None] + table[:, None, None, None, :]             # [K, B, H, W, 2]
    flat = tf.reshape(cand, [k * b, h, w, 2])
    op = _compiled("zsm_tf_flow_match_terms", f0, f1, flat)
    if op is not None:   # the same terms, bit for bit, in one op
        cost = _pooled_cost(op(f0, f1, flat), block)
    else:
        tile = [k, 1, 1, 1]
        a0, a1 = tf.tile(f0, tile), tf.tile(f1, tile)
        valid = _inside(a0, flat, -1.0) * _inside(a1, flat, 1.0)
        cost = _block_cost(warp(a0, flat, -1.0), warp(a1, flat, 1.0), block, valid)
    cost = tf.reshape(cost, [k, b, h, w])
    cost = tf.where(cost < _UNSEEN, cost + penalty * tf.reduce_sum(tf.abs(cand), axis=-1), cost)
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
    """Candidate offsets within ``radius`` in steps of ``step``, (0, 0) first (wins ties)."""
    n = int(round(radius / step))
    vals = [i * step for i in range(-n, n + 1)]
    grid = [(x, y) for y, x in itertools.product(vals, vals)]
    return [(0.0, 0.0)] + [g for g in grid if g != (0.0, 0.0)]


def _median3(d):
    """3x3 median of each component of a field [B, H, W, 2] (edges replicated): removes isolated
    wrong vectors (repetitive texture, flat areas) before they are refined at the next level.
    A 19-exchange median-of-9 network of elementwise min/max (cheaper than sorting)."""
    _, h, w, _ = known_dims(d)
    p = tf.pad(d, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    v = [p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]
    for i, j in ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
                 (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2)):
        v[i], v[j] = tf.minimum(v[i], v[j]), tf.maximum(v[i], v[j])
    return v[4]


def symmetric_flow(f0, f1, levels=5, coarse_radius=3.0, coarse_step=1.0, radius=1.0, step=0.5,
                   block=11, penalty=1e-2, min_size=20, median=True, last_radius=0.5):
    """Half the motion from ``f0`` to ``f1``, per pixel of the frame between them.

    f0, f1 ``[B, H, W, C]`` in [0, 1] -> d ``[B, H, W, 2]`` (dx, dy) with
    ``f0(x - d) ~= f1(x + d)``; the motion f0 -> f1 is ``2 d``. Up to ``levels`` pyramid levels
    (x2 average pooling each): the first three always, each further one only while its shorter
    side keeps ``min_size`` pixels (decided while tracing when the frame size is known, else in
    the graph, so a SavedModel with unknown frame size does the same), so the search reaches
    further on larger frames. At the coarsest level used, candidates cover ``coarse_radius``
    pixels (of that level) in steps of ``coarse_step``, at the
    others ``radius`` in steps of ``step`` (3 levels reach 15 pixels of ``d``, 4 levels 31), at
    full size ``last_radius`` (the costliest level: only the rounding of the level above);
    ``block``: side of the matching block; ``penalty``: cost per pixel of displacement (keeps
    flat areas still); ``median``: 3x3 median filter of the field after each level.
    Samples outside a frame do not count in a block's cost, and a pixel with no candidate seen
    inside both frames keeps the estimate of the level above (extrapolated to the border).
    """
    f0 = tf.convert_to_tensor(f0)
    f1 = tf.convert_to_tensor(f1, f0.dtype)
    pyr = [(f0, f1)]
    for _ in range(levels - 1):
        a, b = pyr[-1]
        pyr.append((tf.nn.avg_pool2d(a, 2, 2, "SAME"), tf.nn.avg_pool2d(b, 2, 2, "SAME")))
    short = tf.minimum(tf.shape(f0)[1], tf.shape(f0)[2])
    # the frame size decides which levels run: in Python when it is known while tracing (the
    # upscaler: only the branches taken are traced, ~1/3 fewer ops), else in the graph with
    # tf.cond, which runs one branch (a SavedModel of unknown frame size decides the same way)
    known = f0.shape[1:3]
    short_known = min(known) if None not in known else None

    def choose(min_short, if_true, if_false):
        if short_known is not None:
            return if_true() if short_known >= min_short else if_false()
        return tf.cond(short >= min_short, if_true, if_false)

    coarse, fine = _grid(coarse_radius, coarse_step), _grid(radius, step)
    d = None
    for level in range(levels - 1, -1, -1):
        a, b = pyr[level]
        dims = known_dims(a)
        size = dims[1:3]
        zero = tf.zeros(tf.stack(dims[:3] + [2]) if any(tf.is_tensor(v) for v in dims)
                        else dims[:3] + [2], a.dtype)

        def search():
            return _refine(a, b, zero, coarse, block, penalty)[0]

        def refine(d_above):
            start = 2.0 * tf.image.resize(d_above, size, method="bilinear")
            return _refine(a, b, start, fine, block, penalty)[0]

        if level >= 3:    # optional level: used (from zero) only if the frame is large enough
            if d is None:
                pick = search
            else:   # a larger level above: refine its estimate; else search this level from zero
                pick = lambda d=d, lv=level: choose(min_size * 2 ** (lv + 1),  # noqa: E731
                                                    lambda: refine(d), search)
            d = choose(min_size * 2 ** level, pick, lambda z=zero: z)
            if d is zero:   # not used (known size): no median of a zero field
                continue
        elif d is None:
            d = search()
        else:
            start = 2.0 * tf.image.resize(d, size, method="bilinear")
            if level == 2:    # from zero when no optional level above was used
                d = choose(min_size * 2 ** (level + 1), lambda d=d: refine(d), search)
            else:
                d, _ = _refine(a, b, start, fine if level else _grid(last_radius, step), block,
                               penalty)
        if median:
            d = _median3(d)
    return _subpixel(f0, f1, d, step, block, penalty)


def upscale_flow(d, scale):
    """Displacements of a ``[B, H, W, 2]`` field at ``scale`` x the resolution:
    ``[B, scale H, scale W, 2]`` (bilinear, values x ``scale``)."""
    _, h, w, _ = known_dims(d)
    return scale * tf.image.resize(d, [scale * h, scale * w], method="bilinear")


def _compiled(name, *tensors):
    """The compiled op ``name`` (``custom_ops/flow_ops.cc``) where the upscaler's CPU-inference
    scope turns the fused ops on (:func:`zsm_tf.ops.winograd.scope`) and every tensor is
    float32, else None."""
    from zsm_tf.ops import winograd

    if not winograd.fused_deform_active() or any(t.dtype != tf.float32 for t in tensors):
        return None
    from zsm_tf.ops import custom_op

    lib = custom_op.load()
    return None if lib is None else getattr(lib, name, None)


def midpoint(f0, f1, d):
    """The frame between ``f0`` and ``f1`` given their symmetric displacement ``d``
    (all ``[B, H, W, C]`` / ``[B, H, W, 2]`` at one resolution). Inside the upscaler's
    CPU-inference scope, in float32, one compiled op (``custom_ops/flow_ops.cc``: the
    same arithmetic in one pass instead of ~40 ops and four gathers per sample)."""
    op = _compiled("zsm_tf_flow_midpoint", f0, f1, d)
    if op is not None:
        return op(f0, f1, d)
    w0 = _inside(f0, d, -1.0)[..., None]
    w1 = _inside(f1, d, 1.0)[..., None]
    # where one side's sample falls outside its frame (content entering or leaving the picture),
    # the other side alone; the plain average where both (or neither) are inside
    w0, w1 = w0 + 1e-3, w1 + 1e-3
    w0 = tf.cast(w0 / (w0 + w1), f0.dtype)
    return w0 * warp(f0, d, -1.0) + (1 - w0) * warp(f1, d, 1.0)
