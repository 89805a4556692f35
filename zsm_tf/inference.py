"""Running the model over whole clips: sliding window over time, spatial tiles, self-ensemble.

The model maps ``[B, N, H, W, 3]`` (``H``, ``W`` multiples of 4) to ``[B, 2N-1, 4H, 4W, 3]``.
:class:`SpaceTimeUpscaler` turns that into a clip-level operation with flat memory:

* **time**: windows of ``N`` input frames that overlap by one frame (starts ``0, N-1, 2(N-1)...``,
  like the authors' test script); window ``s`` gives outputs ``2s .. 2s+2N-2``; the frame two
  windows share is taken from the earlier window, so each of the ``2K-1`` outputs of ``K`` input
  frames is produced exactly once. The last window is moved back to end on the last frame
  (full ``N`` frames of context, same shape, no retrace) and gives only the outputs not yet given.
  Only the ``N`` frames of the current window are held.
* **space**: frames are padded (reflection) to a multiple of 4 and the outputs cropped. With
  ``tile=S``, each window is cut into ``S x S`` tiles (LR pixels) overlapping by ``overlap`` pixels,
  on a grid of multiples of 4 (the model's pyramid sees the same sampling grid as untiled); the
  tile outputs are blended with linear ramps across each overlap (zero over the quarter of the
  overlap nearest the tile's edge), weights normalised to sum to 1.
* **self-ensemble**: the average of the outputs for the 4 flips (none, horizontal, vertical,
  both) of the input, each flipped back.

``model`` is any callable ``frames [B, N, H, W, 3] float32 in [0, 1] -> [B, 2N-1, 4H, 4W, 3]``;
a Keras model is wrapped in a ``tf.function`` (one trace per input shape).
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import weakref

import numpy as np

SCALE = 4
FLIPS = ((), (3,), (2,), (2, 3))  # axes of [B, N, H, W, C]: none, horizontal, vertical, both
_TRACED = weakref.WeakKeyDictionary()


def _make_predict(model) -> Callable[[np.ndarray], np.ndarray]:
    try:
        import keras
        is_keras = isinstance(model, keras.Model)
    except ImportError:  # pragma: no cover
        is_keras = False
    if is_keras:
        import tensorflow as tf

        fn = _TRACED.get(model)
        if fn is None:   # one tf.function per model, shared by upscalers (traces are reused)
            ref = weakref.ref(model)   # no cycle: the cache entry must not keep the model alive

            def forward(x):
                return ref()(x, training=False)
            fn = _TRACED[model] = tf.function(forward)

        def predict(x, _model=model):   # the upscaler keeps its model alive
            return fn(tf.convert_to_tensor(x)).numpy()
        return predict

    def predict(x):
        y = model(x)
        return y.numpy() if hasattr(y, "numpy") else np.asarray(y)
    return predict


def pad_amounts(h: int, w: int, multiple: int = 4) -> Tuple[int, int]:
    return (-h) % multiple, (-w) % multiple


def pad_frames(frames: np.ndarray, multiple: int = 4) -> np.ndarray:
    """Pads ``[..., H, W, C]`` at the bottom/right to multiples of ``multiple`` (reflection)."""
    h, w = frames.shape[-3:-1]
    ph, pw = pad_amounts(h, w, multiple)
    if ph == 0 and pw == 0:
        return frames
    pads = [(0, 0)] * (frames.ndim - 3) + [(0, ph), (0, pw), (0, 0)]
    mode = "reflect" if h > ph and w > pw else "edge"
    return np.pad(frames, pads, mode=mode)


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 4) -> List[int]:
    """Starts of tiles of ``tile`` pixels covering ``length`` with at least ``overlap`` overlap.

    ``length``, ``tile`` and the step are multiples of ``multiple``; the last tile ends at
    ``length`` (it may overlap its neighbour more)."""
    if tile >= length:
        return [0]
    step = max(multiple, (tile - overlap) // multiple * multiple)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return sorted(set(starts))


def ramp_weights(starts: Sequence[int], tile: int, length: int, ramp: int) -> List[np.ndarray]:
    """1-D blending weights (one array of ``tile`` values per tile) that sum to 1 at every pixel.

    At each inner edge (not at the image border) a tile's weight is 0 over the first ``ramp // 4``
    pixels (where zero padding spoils the model's output most), then rises linearly to 1 at
    ``ramp``; the weights of all tiles at a pixel are then divided by their sum."""
    x = np.arange(tile, dtype=np.float64) + 0.5
    margin = ramp // 4

    def weights(m):
        raw = []
        for s in starts:
            w = np.ones(tile)
            if ramp > 0 and s > 0:
                w = np.minimum(w, np.clip((x - m) / (ramp - m), 0, 1))
            if ramp > 0 and s + tile < length:
                w = np.minimum(w, np.clip((tile - x - m) / (ramp - m), 0, 1))
            raw.append(w)
        total = np.zeros(length)
        for s, w in zip(starts, raw):
            total[s:s + tile] += w
        return raw, total

    raw, total = weights(margin)
    if margin and total.min() <= 0:   # overlaps too small for the margin: plain ramps
        raw, total = weights(0)
    return [(w / total[s:s + tile]).astype(np.float32) for s, w in zip(starts, raw)]


class SpaceTimeUpscaler:
    """Clip-level inference; see the module docstring.

    Args:
      model: callable ``[B, N, H, W, 3] -> [B, 2N-1, 4H, 4W, 3]`` (floats in [0, 1]).
      window: input frames per model call (``N``, >= 2).
      tile: tile size in input pixels (a multiple of 4, >= 16), or None for whole frames.
      overlap: tile overlap in input pixels (default ``tile // 4``, rounded to a multiple of 4).
      self_ensemble: average over the 4 flips.
      batch: tiles (x flips) per model call.
    """

    def __init__(self, model, window: int = 7, tile: Optional[int] = None,
                 overlap: Optional[int] = None, self_ensemble: bool = False, batch: int = 1):
        if window < 2:
            raise ValueError(f"window must be at least 2 frames, got {window}")
        if tile is not None and (tile < 16 or tile % 4):
            raise ValueError(f"tile must be a multiple of 4 and at least 16, got {tile}")
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.predict = _make_predict(model)
        self.window = int(window)
        self.tile = tile
        if overlap is None and tile is not None:
            overlap = max(4, tile // 4 // 4 * 4)
        if tile is not None and not 0 <= overlap < tile:
            raise ValueError(f"tile overlap must be in [0, tile), got {overlap}")
        self.overlap = overlap or 0
        self.flips = FLIPS if self_ensemble else FLIPS[:1]
        self.batch = int(batch)

    # ---------------------------------------------------------------------------------- window
    def upscale_window(self, frames: np.ndarray) -> np.ndarray:
        """``[n, H, W, 3]`` (uint8, or float in [0, 1]) -> float32 ``[2n-1, 4H, 4W, 3]`` in [0, 1]."""
        frames = np.asarray(frames)
        if frames.dtype == np.uint8:
            x = frames.astype(np.float32) / 255.0
        else:
            x = frames.astype(np.float32)
        n, h, w = x.shape[:3]
        x = pad_frames(x)
        hp, wp = x.shape[1:3]
        if self.tile is None:
            ty, tx = [0], [0]
            th, tw = hp, wp
        else:
            th, tw = min(self.tile, hp), min(self.tile, wp)
            ty = tile_starts(hp, th, self.overlap)
            tx = tile_starts(wp, tw, self.overlap)
        tiles = [(y0, x0) for y0 in ty for x0 in tx]
        jobs = [(t, f) for t in range(len(tiles)) for f in range(len(self.flips))]
        single = len(tiles) == 1
        if not single:
            wy = dict(zip(ty, ramp_weights([v * SCALE for v in ty], th * SCALE, hp * SCALE, self.overlap * SCALE)))
            wx = dict(zip(tx, ramp_weights([v * SCALE for v in tx], tw * SCALE, wp * SCALE, self.overlap * SCALE)))
            out = np.zeros((2 * n - 1, hp * SCALE, wp * SCALE, 3), np.float32)
        ens = None
        inv = 1.0 / len(self.flips)
        for b0 in range(0, len(jobs), self.batch):
            chunk = jobs[b0:b0 + self.batch]
            inp = []
            for t, f in chunk:
                y0, x0 = tiles[t]
                patch = x[None, :, y0:y0 + th, x0:x0 + tw]
                for ax in self.flips[f]:
                    patch = np.flip(patch, axis=ax)
                inp.append(patch[0])
            pred = self.predict(np.ascontiguousarray(np.stack(inp)))
            for (t, f), y in zip(chunk, pred):
                y = y[None]
                for ax in self.flips[f]:
                    y = np.flip(y, axis=ax)
                y = y[0]
                ens = y * inv if f == 0 else ens + y * inv   # flips of one tile are consecutive
                if f != len(self.flips) - 1:
                    continue
                if single:
                    out = ens
                else:
                    y0, x0 = tiles[t]
                    wgt = wy[y0][:, None, None] * wx[x0][None, :, None]
                    out[:, y0 * SCALE:(y0 + th) * SCALE, x0 * SCALE:(x0 + tw) * SCALE] += ens * wgt
                ens = None
        out = out[:, :h * SCALE, :w * SCALE]
        return np.clip(out, 0.0, 1.0)

    # ------------------------------------------------------------------------------------ clip
    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Input frames (uint8 ``[H, W, 3]``) -> the ``2K-1`` output frames (uint8), in order.

        Holds at most ``window`` input frames. Raises ``ValueError`` for fewer than 2 frames."""
        n = self.window
        buf: List[np.ndarray] = []
        read = 0
        emitted = 0   # global output index of the next frame to yield

        def run(start):
            nonlocal emitted
            out = self.upscale_window(np.stack(buf))
            for j in range(out.shape[0]):
                g = 2 * start + j
                if g >= emitted:
                    emitted = g + 1
                    yield to_uint8(out[j])

        for f in frames:
            buf.append(f)
            if len(buf) > n:
                buf.pop(0)
            read += 1
            if read >= n and (read - 1) % (n - 1) == 0:
                yield from run(read - n)
        if read < 2:
            raise ValueError(f"need at least 2 frames, got {read}")
        if emitted < 2 * read - 1:
            yield from run(read - len(buf))


def to_uint8(frame: np.ndarray) -> np.ndarray:
    return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def num_outputs(num_inputs: int) -> int:
    return 2 * num_inputs - 1
