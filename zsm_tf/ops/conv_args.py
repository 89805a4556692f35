"""Argument normalisation shared by the deformable-convolution entry points."""
from __future__ import annotations


def pair(v, name="value"):
    """``3 -> (3, 3)``, ``(1, 2) -> (1, 2)``; anything else: ValueError naming ``name``."""
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(i) for i in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return v
