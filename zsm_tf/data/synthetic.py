"""A built-in, generated training set: procedural textured scenes with sub-pixel motion.

No download, no files: every clip is rendered by TensorFlow ops from a stateless seed, so clip
``i`` of seed ``s`` is the same on every run, worker and machine, and the pipeline parallelises
inside ``tf.data`` without Python.

A scene is a background "canvas" larger than the frame plus up to ``max_objects`` sprites:

* texture: multi-octave value noise (bicubic-upsampled random grids, 6 octaves, random
  persistence) mapped between two random colours through a random-contrast sigmoid (soft
  blotches to hard-edged patches), chroma noise, a linear colour gradient, sinusoidal gratings in
  noise-shaped regions (fine periodic detail, the hard case for super-resolution) and painted
  rectangles / ellipses with anti-aliased edges;
* camera motion: per clip a random mix of pan (velocity up to 3 HR px/frame plus acceleration),
  zoom (up to 2.5 %/frame) and rotation (up to 0.02 rad/frame), applied to the canvas as an
  affine warp with bilinear sampling (``ImageProjectiveTransformV3``), so all motion is
  sub-pixel;
* objects: textured ellipses / rectangles with soft alpha edges moving independently (velocity up
  to 4 px/frame, own rotation and scale change), composited in order over the background, so they
  occlude the background and each other and enter / leave the frame.

Frames are rendered at HR; the LR inputs are made from them like real data (bicubic x4).
"""
from __future__ import annotations

import math

import tensorflow as tf

_fold = tf.random.experimental.stateless_fold_in


def _u(seed, i, shape=(), lo=0.0, hi=1.0):
    return tf.random.stateless_uniform(list(shape), _fold(seed, i), lo, hi)


def _colour(seed):
    """A random RGB colour, saturation drawn between grey and fully random."""
    rgb = _u(seed, 0, (3,))
    grey = _u(seed, 1)
    sat = _u(seed, 2, (), 0.15, 1.0)
    return grey + sat * (rgb - grey)


def _grid(size):
    c = tf.range(size, dtype=tf.float32)
    return c[None, :], c[:, None]  # x [1, S], y [S, 1]


def fractal_noise(seed, size, channels=1, base=4, octaves=6, persistence=0.6):
    """Sum of bicubic-upsampled random grids (value noise), octave o having ``base*2**o`` cells
    and amplitude ``persistence**o``; returns [size, size, channels], roughly zero-mean."""
    total = tf.zeros([size, size, channels])
    amp_sum = 0.0
    for o in range(octaves):
        cells = min(base * 2 ** o, size)
        g = tf.random.stateless_uniform([1, cells, cells, channels], _fold(seed, o), -1.0, 1.0)
        up = tf.image.resize(g, [size, size], method="bicubic")[0]
        amp = persistence ** o
        total += amp * up
        amp_sum += amp
    return total / amp_sum


def _soft_shape(seed, size, cx, cy, rx, ry, angle, is_rect, softness):
    """Alpha [size, size] of a rotated ellipse or rectangle with an anti-aliased edge."""
    x, y = _grid(size)
    dx, dy = x - cx, y - cy
    ca, sa = tf.cos(angle), tf.sin(angle)
    u = ca * dx + sa * dy
    v = -sa * dx + ca * dy
    d_ell = (tf.sqrt((u / rx) ** 2 + (v / ry) ** 2 + 1e-12) - 1.0) * tf.minimum(rx, ry)
    d_rect = tf.maximum(tf.abs(u) - rx, tf.abs(v) - ry)
    d = tf.where(is_rect, d_rect, d_ell)
    return tf.sigmoid(-d / softness)


def texture(seed, size, n_shapes=6):
    """A random natural-looking RGB texture [size, size, 3] in [0, 1]."""
    # luminance pattern: fractal noise through a sigmoid of random contrast
    pers = _u(seed, 0, (), 0.45, 0.75)
    lum = fractal_noise(_fold(seed, 1), size, 1, base=3, octaves=6, persistence=pers)
    lum = (lum - tf.reduce_mean(lum)) / (tf.math.reduce_std(lum) + 1e-6)
    contrast = tf.exp(_u(seed, 2, (), math.log(0.7), math.log(12.0)))
    lum = tf.sigmoid(contrast * lum)
    c1 = _colour(_fold(seed, 3))
    c2 = _colour(_fold(seed, 4))
    rgb = c1 * (1.0 - lum) + c2 * lum
    # fine grain (the top octaves, at 1-2 pixel scale)
    grain = fractal_noise(_fold(seed, 16), size, 1, base=max(size // 4, 1), octaves=2,
                          persistence=0.7)
    rgb += _u(seed, 17, (), 0.0, 0.12) * grain
    # chroma noise
    chroma = fractal_noise(_fold(seed, 5), size, 3, base=4, octaves=4, persistence=0.5)
    rgb += _u(seed, 6, (), 0.0, 0.25) * chroma
    # linear colour gradient
    x, y = _grid(size)
    ang = _u(seed, 7, (), 0.0, 2 * math.pi)
    ramp = (tf.cos(ang) * x + tf.sin(ang) * y) / size - 0.5 * (tf.cos(ang) + tf.sin(ang))
    rgb += ramp[..., None] * _u(seed, 8, (3,), -0.5, 0.5)
    # gratings in a noise-shaped region
    freq = _u(seed, 9, (), 0.04, 0.3)  # cycles per HR pixel
    gang = _u(seed, 10, (), 0.0, math.pi)
    phase = _u(seed, 11, (), 0.0, 2 * math.pi)
    grating = 0.5 + 0.5 * tf.sin(2 * math.pi * freq * (tf.cos(gang) * x + tf.sin(gang) * y) + phase)
    region = fractal_noise(_fold(seed, 12), size, 1, base=2, octaves=3, persistence=0.5)[..., 0]
    region = tf.sigmoid(8.0 * (region - _u(seed, 13, (), -0.1, 0.4)))
    region *= tf.cast(_u(seed, 14) < 0.35, tf.float32)
    gcol = _colour(_fold(seed, 15))
    rgb = rgb * (1.0 - region[..., None]) + (gcol * grating[..., None]) * region[..., None]
    # painted shapes
    for j in range(n_shapes):
        s = _fold(seed, 100 + j)
        present = tf.cast(_u(s, 0) < 0.6, tf.float32)
        cx, cy = _u(s, 1, (), 0, size), _u(s, 2, (), 0, size)
        rx = _u(s, 3, (), 0.03, 0.2) * size
        ry = _u(s, 4, (), 0.03, 0.2) * size
        alpha = _soft_shape(s, size, cx, cy, rx, ry, _u(s, 5, (), 0, math.pi), _u(s, 6) < 0.5,
                            _u(s, 7, (), 0.3, 1.2)) * present
        col = _colour(_fold(s, 8))
        shade = 1.0 + 0.3 * fractal_noise(_fold(s, 9), size, 1, base=4, octaves=3, persistence=0.5)
        rgb = rgb * (1.0 - alpha[..., None]) + col * shade * alpha[..., None]
    return tf.clip_by_value(rgb, 0.0, 1.0)


def _affine(a0, a1, a2, b0, b1, b2):
    z = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, z, z], axis=-1)


def _warp(images, transforms, size, fill_mode):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=tf.cast(transforms, tf.float32), output_shape=[size, size],
        fill_value=0.0, interpolation="BILINEAR", fill_mode=fill_mode)


def render_clip(seed, size=128, frames=7, max_objects=3):
    """Renders one clip [frames, size, size, 3] float32 in [0, 1] from a stateless seed [2]."""
    seed = tf.cast(seed, tf.int64)
    margin = int(math.ceil(size * 0.3)) + 8
    canvas = size + 2 * margin
    bg = texture(_fold(seed, 1), canvas)

    t = tf.range(frames, dtype=tf.float32) - (frames - 1) / 2.0  # centred time
    cam = _fold(seed, 2)
    pan = tf.cast(_u(cam, 0) < 0.85, tf.float32)
    zoom = tf.cast(_u(cam, 1) < 0.35, tf.float32)
    rot = tf.cast(_u(cam, 2) < 0.35, tf.float32)
    speed = _u(cam, 3, (), 0.0, 3.0) * pan
    heading = _u(cam, 4, (), 0.0, 2 * math.pi)
    accel = _u(cam, 5, (2,), -0.3, 0.3) * pan
    shift_x = speed * tf.cos(heading) * t + 0.5 * accel[0] * t ** 2
    shift_y = speed * tf.sin(heading) * t + 0.5 * accel[1] * t ** 2
    scale = tf.exp(_u(cam, 6, (), -0.025, 0.025) * zoom * t)
    theta = _u(cam, 7, (), -0.02, 0.02) * rot * t
    m = (size - 1) / 2.0
    a0, a1 = scale * tf.cos(theta), -scale * tf.sin(theta)
    b0, b1 = scale * tf.sin(theta), scale * tf.cos(theta)
    cx = (canvas - 1) / 2.0 + shift_x
    cy = (canvas - 1) / 2.0 + shift_y
    transforms = _affine(a0, a1, cx - (a0 + a1) * m, b0, b1, cy - (b0 + b1) * m)
    clip = _warp(tf.tile(bg[None], [frames, 1, 1, 1]), transforms, size, "REFLECT")

    sprite = size
    pc = (sprite - 1) / 2.0
    for j in range(max_objects):
        o = _fold(seed, 10 + j)
        present = tf.cast(_u(o, 0) < 0.6, tf.float32)
        tex = texture(_fold(o, 1), sprite, n_shapes=2)
        alpha = _soft_shape(o, sprite, pc, pc, _u(o, 2, (), 0.08, 0.35) * sprite,
                            _u(o, 3, (), 0.08, 0.35) * sprite, _u(o, 4, (), 0, math.pi),
                            _u(o, 5) < 0.4, _u(o, 6, (), 0.3, 1.0))
        rgba = tf.concat([tex, alpha[..., None]], axis=-1)
        px = _u(o, 7, (), 0.1, 0.9) * size + _u(o, 8, (), -4.0, 4.0) * t
        py = _u(o, 9, (), 0.1, 0.9) * size + _u(o, 10, (), -4.0, 4.0) * t
        phi = _u(o, 11, (), 0, 2 * math.pi) + _u(o, 12, (), -0.05, 0.05) * t
        sig = tf.exp(_u(o, 13, (), -0.03, 0.03) * t) * _u(o, 14, (), 0.6, 1.2)
        # output (x, y) -> sprite coords: pc + R(-phi) ((x, y) - pos) / sig
        c, s = tf.cos(phi) / sig, tf.sin(phi) / sig
        tr = _affine(c, s, pc - c * px - s * py, -s, c, pc + s * px - c * py)
        layer = _warp(tf.tile(rgba[None], [frames, 1, 1, 1]), tr, size, "CONSTANT")
        a = layer[..., 3:] * present
        clip = clip * (1.0 - a) + layer[..., :3] * a
    return tf.clip_by_value(clip, 0.0, 1.0)


class SyntheticClips:
    """Generated HR clips of ``frames`` frames, ``hr_size`` x ``hr_size`` pixels.

    ``num_clips=None``: an endless stream (sample ``k`` renders scene ``k``); an int: a fixed set
    of that many scenes (shuffled per epoch like a real data set, e.g. for overfitting checks).
    ``seed`` picks the scenes; validation uses another seed than training.
    """

    kind = "synthetic"

    def __init__(self, hr_size=128, frames=7, seed=0, num_clips=None, max_objects=3):
        self.hr_size = int(hr_size)
        self.frames = int(frames)
        self.seed = int(seed)
        self.num_items = None if num_clips is None else int(num_clips)
        self.max_objects = int(max_objects)

    def describe(self) -> str:
        n = "endless stream" if self.num_items is None else f"fixed set of {self.num_items} clips"
        return (f"built-in generated clips (procedural textures, camera pan/zoom/rotation, moving "
                f"occluding objects; {n}, seed {self.seed}), HR {self.hr_size}x{self.hr_size}, "
                f"{self.frames} frames")

    def load(self, k, item, seed):
        del k, seed
        scene = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(item, tf.int64)])
        hr = render_clip(scene, self.hr_size, self.frames, self.max_objects)
        return {"hr": tf.ensure_shape(hr, [self.frames, self.hr_size, self.hr_size, 3])}
