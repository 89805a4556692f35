"""Geometric and temporal augmentation of (LR, HR) clip pairs, as in the paper.

Every op is applied identically to the LR inputs ``[N, h, w, C]`` and the HR targets
``[2N-1, H, W, C]``, so the pair stays consistent: horizontal flip, vertical flip, rotation by
90 degrees (a transpose of H and W; with the flips this gives all 8 symmetries of the square)
and temporal reversal (reversing both sequences keeps LR frame ``i`` aligned with HR frame
``2i``). The random choices come from a stateless seed, so a sample's augmentation depends only
on the sample's seed (reproducible, resumable, independent of the number of workers).
"""
from __future__ import annotations

import tensorflow as tf

OPS = ("hflip", "vflip", "rot90", "reverse")


def apply_ops(clip, hflip=False, vflip=False, rot90=False, reverse=False):
    """Applies the chosen ops (Python bools or scalar bool tensors) to one clip ``[T, H, W, C]``."""
    clip = tf.convert_to_tensor(clip)

    def cond(flag, fn, x):
        if isinstance(flag, bool):
            return fn(x) if flag else x
        return tf.cond(flag, lambda: fn(x), lambda: x)

    clip = cond(hflip, lambda x: tf.reverse(x, axis=[2]), clip)
    clip = cond(vflip, lambda x: tf.reverse(x, axis=[1]), clip)
    clip = cond(rot90, lambda x: tf.transpose(x, [0, 2, 1, 3]), clip)
    clip = cond(reverse, lambda x: tf.reverse(x, axis=[0]), clip)
    return clip


def random_flags(seed, flip=True, rot90=True, reverse=True):
    """Draws the four op flags (each with probability 1/2 when enabled) from a stateless seed."""
    u = tf.random.stateless_uniform([4], seed=seed)
    on = tf.constant([flip, flip, rot90, reverse])
    flags = tf.logical_and(u < 0.5, on)
    return {"hflip": flags[0], "vflip": flags[1], "rot90": flags[2], "reverse": flags[3]}


def augment_pair(lr, hr, seed, flip=True, rot90=True, reverse=True):
    """Randomly flips / rotates / time-reverses an (LR, HR) pair the same way.

    ``rot90`` needs square patches when clips are batched afterwards (it swaps H and W).
    """
    flags = random_flags(seed, flip, rot90, reverse)
    return apply_ops(lr, **flags), apply_ops(hr, **flags)
