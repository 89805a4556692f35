"""Output timestamps: each output frame at its input frame's time, each new frame midway.

``K`` input frames at times ``t_0 .. t_{K-1}`` (relative to the first) give ``2K-1`` outputs:
output ``2i`` is at ``t_i`` and output ``2i+1`` at ``(t_i + t_{i+1}) / 2``. A constant-rate input
(every ``t_i`` within one tick or 1 ms of ``i / rate``) is written at exactly twice its rational
rate (24000/1001 -> 48000/1001), output ``g`` at ``g / (2 rate)``; a variable-rate input keeps its
own timestamps, in a time base twice as fine so the midpoints are exact. ``slowmo`` plays the same
frames at half speed: every time doubles.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence

CFR_TOLERANCE_S = Fraction(1, 1000)


@dataclass
class OutputTiming:
    """``pts(g)``: output frame ``g``'s timestamp in ``time_base`` units (starting at 0)."""
    time_base: Fraction
    rate: Fraction                 # nominal output frame rate (exact for constant-rate input)
    cfr: bool
    ticks: Optional[list] = None   # VFR: input timestamps - first one, in input ticks

    def pts(self, g: int) -> int:
        if self.cfr:
            return g
        i, odd = divmod(g, 2)
        return self.ticks[i] + self.ticks[i + 1] if odd else 2 * self.ticks[i]

    def seconds(self, g: int) -> Fraction:
        return self.pts(g) * self.time_base


def is_constant_rate(pts: Sequence[int], time_base: Fraction, rate: Fraction) -> bool:
    """Every frame within ``max(1 tick, 1 ms)`` of ``first + i / rate``."""
    tol = max(Fraction(time_base), CFR_TOLERANCE_S)
    p0 = pts[0]
    return all(abs((p - p0) * time_base - Fraction(i) / rate) <= tol for i, p in enumerate(pts))


def output_timing(rate: Fraction, mode: str = "double", pts: Optional[Sequence] = None,
                  time_base: Optional[Fraction] = None) -> "tuple[OutputTiming, Optional[str]]":
    """The output timing for input frames at ``pts`` (``time_base`` units; None: constant ``rate``).

    Returns (timing, note): the note says when the input is variable-rate or its timestamps are
    unusable (missing or not increasing; then the constant ``rate`` is assumed)."""
    factor = 2 if mode == "double" else 1
    cfr = OutputTiming(time_base=1 / (Fraction(rate) * factor), rate=Fraction(rate) * factor, cfr=True)
    if pts is None or time_base is None or len(pts) < 2:
        return cfr, None
    if any(p is None for p in pts) or any(b <= a for a, b in zip(pts, pts[1:])):
        return cfr, f"the input's timestamps are missing or out of order: assuming a constant {float(rate):.3f} fps"
    if is_constant_rate(pts, Fraction(time_base), Fraction(rate)):
        return cfr, None
    ticks = [p - pts[0] for p in pts]
    tb = Fraction(time_base) / 2 if mode == "double" else Fraction(time_base)
    gaps = [(b - a) * Fraction(time_base) for a, b in zip(pts, pts[1:])]
    note = (f"variable frame rate input ({1 / float(max(gaps)):.2f} to {1 / float(min(gaps)):.2f} fps): "
            f"output frames keep the input's timestamps")
    return OutputTiming(time_base=tb, rate=Fraction(rate) * factor, cfr=False, ticks=ticks), note
