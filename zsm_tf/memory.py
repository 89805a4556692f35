"""Memory budget of clip upscaling: how much a window costs, and the tiles that fit a budget.

The peak resident memory of :class:`zsm_tf.inference.SpaceTimeUpscaler` is modelled as

    base                         TensorFlow, the compiled op, the weights (measured: ~0.75 GB)
  + window buffers               the float32 output of one window, 2N-1 frames of 4H x 4W x 3
                                 (only when tiles are blended) + the uint8 frames queued for
                                 the encoder + the N input frames
  + model(tile)                  the network on one tile of th x tw input pixels:
        LR part   K_LR * (2N-1) * nf * th * tw * 4 bytes   (features, alignment, ConvLSTM)
        HR part   K_HR * recon_chunk * 16 * th * tw * 64 * 4 bytes   (reconstruction at 2x, 4x)

with ``K_LR`` and ``K_HR`` fitted to peak RSS measured in fresh processes
(``python bench/memory_model.py`` prints measured next to estimated), times a safety margin.
:func:`choose_tiles` then picks the tile grid with the least computed area whose estimate fits
the budget; if even the smallest tile does not fit, :class:`MemoryBudgetError` says so (one
line) before any work starts.

Sizes are in bytes. ``H, W`` are the padded input frame size (multiples of 4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

GiB = 1 << 30
BASE_BYTES = int(0.85 * GiB)   # TF + op + runtime (measured 0.82 GiB with 64x48 frames)
K_LR = 12.0                    # live LR tensors per frame per nf channel (fitted, see below)
K_HR = 2.2                     # live 64-channel HR tensors per reconstructed frame (fitted)
# First fitted on the shipped model (nf=32), window 4, 320x180 whole frames (AVX2 machine): peak
# RSS 1.63 GiB with recon_chunk=1 and 4.29 GiB with all 7 frames at once, so one frame's
# reconstruction holds (4.29 - 1.63) / 6 = 0.44 GiB = 2.0 x 64 channels at 4x. Refitted with
# longer windows and larger frames (Sapphire Rapids, float32, `bench/memory_model.py`): peak RSS
# 1.15 / 1.78 / 2.31 / 2.95 / 3.51 / 4.60 / 5.12 GiB at 160x120:4, 320x180:4, :6, :9,
# 480x272:4, :7, 640x360:4 (window after the colon), where K_LR = 7 and a 1.10 margin
# underestimated by up to 0.67 GiB (17%); least squares gives K_LR 12.1, K_HR 2.05.
BF16_FACTOR = 0.75             # bfloat16 activations (weights and some casts stay float32)
MARGIN = 1.20                  # safety margin on the model's share
DEFAULT_CAP = 5 * GiB          # default budget: at most this much (see default_budget)
MIN_TILE = 32                  # smallest tile side (input pixels) worth running
AUTO_OVERLAP = 16              # overlap of automatic tiles (input pixels)


class MemoryBudgetError(ValueError):
    """The job cannot fit the memory budget; the message is one line. :meth:`advice` says it
    with other names for the two settings (the commands: their options)."""

    def __init__(self, what, budget="the memory budget", window="the window"):
        self.what = what
        super().__init__(self.advice(budget, window))

    def advice(self, budget="the memory budget", window="the window") -> str:
        return f"{self.what}; raise {budget}, lower {window}, or free memory"


def available_bytes() -> Optional[int]:
    """Memory available to this process now: ``MemAvailable`` of /proc/meminfo, lowered to
    the cgroup's remaining limit if there is one; None where neither can be read."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                room = int(limit) - int(f.read().strip())
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def default_budget() -> int:
    """The default ``--max-memory``: 80% of the available memory, at most :data:`DEFAULT_CAP`
    (bigger tiles than that buys give little speed: the tile overlap is already a small share)."""
    avail = available_bytes()
    return DEFAULT_CAP if avail is None else int(min(DEFAULT_CAP, 0.8 * avail))


def parse_size(text) -> int:
    """``"6G"``, ``"6GB"``, ``"5.5g"``, ``"800M"``, ``"2048MiB"`` or a plain number of GB -> bytes."""
    s = str(text).strip().upper().replace("IB", "").rstrip("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": GiB, "T": 1 << 40}
    mult = GiB
    if s and s[-1] in units:
        mult, s = units[s[-1]], s[:-1]
    try:
        value = float(s)
    except ValueError:
        raise ValueError(f"cannot read memory size {text!r} (e.g. 6G, 800M)") from None
    if not value > 0:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return int(value * mult)


def fmt(nbytes: float) -> str:
    return f"{nbytes / GiB:.1f} GiB"


@dataclass(frozen=True)
class ModelShape:
    """What the memory of a ZoomingSlowMo depends on."""

    nf: int = 64
    params: int = 11_102_771
    recon_chunk: Optional[int] = 1
    bf16: bool = False

    @classmethod
    def of(cls, model, bf16=False) -> "ModelShape":
        nf = getattr(model, "nf", 64)
        try:
            params = int(model.count_params())
        except Exception:   # a plain callable
            params = 0
        return cls(nf=nf, params=params, recon_chunk=getattr(model, "recon_chunk", None), bf16=bf16)


def model_bytes(shape: ModelShape, window: int, th: int, tw: int, batch: int = 1) -> float:
    """The network's working memory for one call on ``batch`` tiles of ``th x tw`` input pixels."""
    t = 2 * window - 1
    px = th * tw * batch
    lr = K_LR * t * shape.nf * px * 4
    chunk = t * batch if shape.recon_chunk is None else min(shape.recon_chunk, t * batch)
    hr = K_HR * chunk * 16 * (px / batch) * 64 * 4
    act = (lr + hr) * (BF16_FACTOR if shape.bf16 else 1.0)
    return MARGIN * act


def buffer_bytes(window: int, h: int, w: int, queued: int) -> float:
    """The upscaler's own buffers: the float32 input window, the float32 window output (the
    model's own output with whole frames, the blending buffer with tiles), ``queued`` uint8
    output frames waiting for the encoder."""
    t = 2 * window - 1
    hr = 16 * h * w * 3
    return window * h * w * 3 * 4 + t * hr * 4 + queued * hr


def estimate(shape: ModelShape, window: int, h: int, w: int, tile_hw: Optional[Tuple[int, int]],
             queued: int = 0, batch: int = 1) -> float:
    """Peak resident bytes for frames of ``h x w`` (padded) input pixels with tiles of
    ``tile_hw`` (None: whole frames)."""
    th, tw = tile_hw if tile_hw else (h, w)
    th, tw = min(th, h), min(tw, w)
    params = shape.params * 4 * (2 if shape.bf16 else 1)
    return (BASE_BYTES + params + buffer_bytes(window, h, w, queued)
            + model_bytes(shape, window, th, tw, batch))


def _grid(length: int, count: int, overlap: int) -> int:
    """Tile side (multiple of 4) so that ``count`` tiles overlapping by ``overlap`` cover ``length``."""
    if count == 1:
        return length
    side = math.ceil((length + (count - 1) * overlap) / count)
    return min(length, -(-side // 4) * 4)


def choose_tiles(shape: ModelShape, window: int, h: int, w: int, budget: float,
                 queued: int = 0, overlap: int = AUTO_OVERLAP) -> Optional[Tuple[int, int]]:
    """The tile size ``(th, tw)`` (input pixels) with the least computed area whose estimate
    fits ``budget``, or None when whole frames fit. Raises :class:`MemoryBudgetError`."""
    if estimate(shape, window, h, w, None, queued) <= budget:
        return None
    best = None
    max_y = max(1, math.ceil((h - overlap) / max(4, MIN_TILE - overlap)))
    max_x = max(1, math.ceil((w - overlap) / max(4, MIN_TILE - overlap)))
    for ny in range(1, max_y + 1):
        th = _grid(h, ny, overlap)
        if th < min(MIN_TILE, h):
            break
        for nx in range(1, max_x + 1):
            tw = _grid(w, nx, overlap)
            if tw < min(MIN_TILE, w):
                break
            if (th, tw) == (h, w):
                continue
            if estimate(shape, window, h, w, (th, tw), queued) > budget:
                continue
            area = ny * nx * th * tw
            if best is None or area < best[0]:
                best = (area, (th, tw))
            break   # more columns only add overlap
    if best is None:
        need = estimate(shape, window, h, w, (min(MIN_TILE, h), min(MIN_TILE, w)), queued)
        raise MemoryBudgetError(
            f"cannot fit {w}x{h} frames (window {window}) in {fmt(budget)} of memory: needs about "
            f"{fmt(need)} even with {MIN_TILE}x{MIN_TILE} tiles")
    return best[1]
