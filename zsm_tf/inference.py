"""Running the model over whole clips: sliding window over time, spatial tiles, self-ensemble.

The model maps ``[B, N, H, W, 3]`` (``H``, ``W`` multiples of 4) to ``[B, 2N-1, 4H, 4W, 3]``.
:class:`SpaceTimeUpscaler` turns that into a clip-level operation with flat memory:

* **time**: windows of ``N`` input frames that overlap by one frame (starts ``0, N-1, 2(N-1)...``,
  like the authors' test script); window ``s`` gives outputs ``2s .. 2s+2N-2``; the frame two
  windows share is taken from the earlier window, so each of the ``2K-1`` outputs of ``K`` input
  frames is produced (and reconstructed) exactly once: a later window asks the model only for
  the outputs not yet given (``first_output``; the features and the ConvLSTM still see all ``N``
  frames). The last window is moved back to end on the last frame (full ``N`` frames of context,
  same shape, no retrace) and likewise reconstructs only the outputs not yet given.
  Only the ``N`` frames of the current window are held.
* **space**: frames are padded (reflection) to a multiple of 4 and the outputs cropped. With
  ``tile=S``, each window is cut into ``S x S`` tiles (LR pixels) overlapping by ``overlap`` pixels,
  on a grid of multiples of 4 (the model's pyramid sees the same sampling grid as untiled); the
  tile outputs are blended with linear ramps across each overlap (zero over the quarter of the
  overlap nearest the tile's edge), weights normalised to sum to 1.
  ``tile="auto"`` chooses the tiles from the frame size and a memory budget
  (:mod:`zsm_tf.memory`): whole frames when they fit, else the grid with the least computed area
  that fits; a job that cannot fit fails before any work with a one-line
  :class:`~zsm_tf.memory.MemoryBudgetError`.
* **self-ensemble**: the average of the outputs for the 4 flips (none, horizontal, vertical,
  both) of the input, each flipped back.
* **precision**: float32, or bfloat16 compute (:mod:`zsm_tf.precision`).
* **pipeline**: decoding, the network and the consumer (encoding) run in three threads joined
  by bounded queues, so they overlap; memory stays bounded by the queues' depths.

``model`` is any callable ``frames [B, N, H, W, 3] float32 in [0, 1] -> [B, 2N-1, 4H, 4W, 3]``;
a Keras model is wrapped in a ``tf.function`` (one trace per input shape).
"""
from __future__ import annotations

import time
import weakref
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from zsm_tf.progress import SILENT, Progress

SCALE = 4
FLIPS = ((), (3,), (2,), (2, 3))  # axes of [B, N, H, W, C]: none, horizontal, vertical, both
_TRACED = weakref.WeakKeyDictionary()


def _make_predict(model, jit=False, winograd=0,
                  fused_deform=False) -> Callable[[np.ndarray, int], np.ndarray]:
    """``predict(x [B, N, H, W, 3], first) -> [B, 2N-1-first, 4H, 4W, 3]`` (numpy): the outputs
    from index ``first`` on. A ZoomingSlowMo does not compute the others (its ``first_output``,
    passed as a tensor: one trace for every value); any other callable is sliced. ``jit``: the
    model's XLA-compiled reconstruction (``jit_reconstruction``), where it takes it.
    ``winograd``: the model is traced inside :func:`zsm_tf.ops.winograd.scope` of that tile
    (``fused_deform``: with the fused deformable op).
    ``predict.trace_seconds``: the time spent tracing the model so far (one-time work)."""
    try:
        import keras
        is_keras = isinstance(model, keras.Model)
    except ImportError:  # pragma: no cover
        is_keras = False
    if is_keras:
        import tensorflow as tf

        from zsm_tf.ops.winograd import scope

        traced = _TRACED.setdefault(model, {})
        key = (bool(jit), int(winograd), bool(fused_deform))
        fn = traced.get(key)
        if fn is None:   # one tf.function per model and setting, shared by upscalers (traces reused)
            ref = weakref.ref(model)   # no cycle: the cache entry must not keep the model alive

            takes_first = _takes_first_output(model)
            extra = {"jit_reconstruction": True} if jit and _takes_arg(model, "jit_reconstruction") else {}

            def forward(x, first):
                with scope(int(winograd), fused_deform=bool(fused_deform)):
                    if takes_first:
                        return ref()(x, training=False, first_output=first, **extra)
                    return ref()(x, training=False, **extra)[:, first:]
            fn = traced[key] = tf.function(forward)

        def predict(x, first=0, _model=model):   # the upscaler keeps its model alive
            x, first = tf.convert_to_tensor(x), tf.constant(first, tf.int32)
            t0 = time.perf_counter()
            fn.get_concrete_function(x, first)   # traces a new shape (timed), else a lookup
            predict.trace_seconds += time.perf_counter() - t0
            return fn(x, first).numpy()
        predict.trace_seconds = 0.0
        return predict

    def predict(x, first=0):
        y = model(x)
        y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
        return y[:, first:]
    return predict


def _takes_arg(model, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(model.call).parameters
    except (TypeError, ValueError):
        return False


def _takes_first_output(model) -> bool:
    return _takes_arg(model, "first_output")


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


AUTO = "auto"


class UpscaleSettingError(ValueError):
    """A bad ``window``, ``tile``, ``overlap`` or ``batch``: ``name`` is the argument, the
    message ``"<name> <problem>"`` (the commands say it with their flag's name)."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name} {problem}")
        self.name, self.problem = name, problem


def check_settings(window=None, tile=None, overlap=None, batch=1):
    """The one validation of the upscaler's settings (None: the default); returns ``tile`` as
    None, ``"auto"`` or ``(height, width)``. Raises :class:`UpscaleSettingError`."""
    if window is not None and window < 2:
        raise UpscaleSettingError("window", f"must be at least 2, got {window}")
    if isinstance(tile, (int, np.integer)):
        if tile < 16 or tile % 4:
            raise UpscaleSettingError("tile", f"must be a multiple of 4 and at least 16, got {tile}")
        tile = (int(tile), int(tile))
    elif tile is not None and tile != AUTO:
        tile = tuple(int(v) for v in tile)
        if len(tile) != 2 or min(tile) < 16 or tile[0] % 4 or tile[1] % 4:
            raise UpscaleSettingError("tile", f"must be multiples of 4 and at least 16, got {tile}")
    if overlap is not None and (overlap < 0 or overlap % 4
                                or (isinstance(tile, tuple) and overlap >= min(tile))):
        raise UpscaleSettingError("overlap", f"must be a multiple of 4 in [0, tile), got {overlap}")
    if batch < 1:
        raise UpscaleSettingError("batch", f"must be at least 1, got {batch}")
    return tile


class SpaceTimeUpscaler:
    """Clip-level inference; see the module docstring.

    The defaults are the command line's (``zsm-tf upscale`` with no options; a test holds it):
    the window the weights were trained with and their measured bfloat16 cost, both from the
    model's record (:mod:`zsm_tf.run_dir`, set by :func:`zsm_tf.loading.load_model`), automatic
    tiles under the default memory budget, precision ``auto``.

    Args:
      model: callable ``[B, N, H, W, 3] -> [B, 2N-1, 4H, 4W, 3]`` (floats in [0, 1]).
      window: input frames per model call (``N``, >= 2; default: the record's training window,
        :data:`zsm_tf.run_dir.DEFAULT_WINDOW` without one).
      tile: None (whole frames), a tile size in input pixels (a multiple of 4, >= 16), a
        ``(height, width)`` pair, or ``"auto"`` (default): whole frames if they fit
        ``max_memory``, else the tiles with the least computed area that fit
        (:func:`zsm_tf.memory.choose_tiles`).
      overlap: tile overlap in input pixels, a multiple of 4 (default ``tile // 4`` rounded to a
        multiple of 4; 16 for automatic tiles).
      self_ensemble: average over the 4 flips.
      batch: tiles (x flips) per model call.
      precision: "float32", "bfloat16" (a ZoomingSlowMo is rebuilt under ``mixed_bfloat16``) or
        "auto" (default; see :mod:`zsm_tf.precision`).
      bf16_cost_db: the weights' bfloat16 cost for ``auto`` (default: the record's).
      max_memory: bytes for ``tile="auto"`` (default :func:`zsm_tf.memory.default_budget`).
      pipeline: decode ahead and run the model ahead of the consumer, each in a thread, so that
        decoding, the network and encoding overlap (:meth:`stream`).
      jit: XLA-compile the model's reconstruction: True, False or "auto" (default: in float32
        without Winograd, :func:`zsm_tf.precision.resolve_jit`; same outputs to float rounding).
      winograd: the 3x3 convolutions by Winograd F(m x m, 3 x 3) on the CPU: "auto" (default:
        m = 6 in float32, :func:`zsm_tf.precision.resolve_winograd`; outputs within ~1e-5
        of the stock kernels', relative), 4 or 2 (closer, slower) or 0 (off).
    Raises:
      UpscaleSettingError (a ``ValueError``) for a bad window, tile, overlap or batch.
    """

    def __init__(self, model, window: Optional[int] = None, tile=AUTO,
                 overlap: Optional[int] = None, self_ensemble: bool = False, batch: int = 1, *,
                 precision: str = AUTO, bf16_cost_db: Optional[float] = None,
                 max_memory: Optional[float] = None, pipeline: bool = False, jit=AUTO,
                 winograd=AUTO):
        from zsm_tf import memory
        from zsm_tf import precision as prec
        from zsm_tf.run_dir import settings_of

        tile = check_settings(window, tile, overlap, batch)
        recorded = settings_of(model)
        window = recorded.default_window if window is None else window
        if bf16_cost_db is None:
            bf16_cost_db = recorded.bf16_psnr_cost_db
        self.precision = prec.resolve(precision, bf16_cost_db)
        self.model = prec.with_precision(model, self.precision)
        self.winograd = prec.resolve_winograd(winograd, self.precision)
        self.jit = prec.resolve_jit(jit, self.precision, self.winograd)
        self.fused_deform = prec.resolve_fused_deform()
        self.predict = _make_predict(self.model, self.jit, self.winograd, self.fused_deform)
        self.window = int(window)
        self.tile = tile[0] if isinstance(tile, tuple) and tile[0] == tile[1] else tile
        self._tile = tile
        if overlap is None and isinstance(tile, tuple):
            overlap = max(4, min(tile) // 4 // 4 * 4)
        elif overlap is None and tile == AUTO:
            overlap = memory.AUTO_OVERLAP
        self.overlap = overlap or 0
        self.flips = FLIPS if self_ensemble else FLIPS[:1]
        self.batch = int(batch)
        self.max_memory = memory.default_budget() if max_memory is None else float(max_memory)
        self.max_memory_setting = None if max_memory is None else self.max_memory   # None: default
        self.pipeline = bool(pipeline)
        self._plans = {}

    # ------------------------------------------------------------------------------- planning
    def queued_outputs(self) -> int:
        """Output frames that may wait for the consumer when pipelined."""
        return 2 * self.window - 1 if self.pipeline else 0

    def plan(self, height: int, width: int) -> Optional[Tuple[int, int]]:
        """Tile size ``(th, tw)`` in input pixels for frames of ``height x width`` (None: whole
        frames). With ``tile="auto"`` raises :class:`zsm_tf.memory.MemoryBudgetError` (a
        ``ValueError``, one line) when nothing fits ``max_memory``: call it before starting."""
        from zsm_tf import memory

        hp, wp = height + pad_amounts(height, width)[0], width + pad_amounts(height, width)[1]
        key = (hp, wp)
        if key not in self._plans:
            if self._tile == AUTO:
                shape = memory.ModelShape.of(self.model, bf16=self.precision == "bfloat16")
                self._plans[key] = memory.choose_tiles(shape, self.window, hp, wp, self.max_memory,
                                                       queued=self.queued_outputs(),
                                                       overlap=self.overlap)
            elif self._tile is None or (self._tile[0] >= hp and self._tile[1] >= wp):
                self._plans[key] = None
            else:
                self._plans[key] = (min(self._tile[0], hp), min(self._tile[1], wp))
        return self._plans[key]

    def estimated_peak(self, height: int, width: int) -> float:
        """Estimated peak resident bytes for frames of ``height x width`` with this plan."""
        from zsm_tf import memory

        hp, wp = height + pad_amounts(height, width)[0], width + pad_amounts(height, width)[1]
        shape = memory.ModelShape.of(self.model, bf16=self.precision == "bfloat16")
        return memory.estimate(shape, self.window, hp, wp, self.plan(height, width),
                               queued=self.queued_outputs(), batch=self.batch)

    # ---------------------------------------------------------------------------------- window
    def upscale_window(self, frames: np.ndarray, progress: Optional[Progress] = None,
                       first_output: int = 0) -> np.ndarray:
        """``[n, H, W, 3]`` (uint8, or float in [0, 1]) -> float32 ``[2n-1-first_output, 4H, 4W,
        3]`` in [0, 1]: the window's outputs from index ``first_output`` on (the earlier ones are
        not computed).

        ``progress`` (:class:`zsm_tf.progress.Progress`): advanced after each model call by its
        share of the window's outputs, so a bar moves within a window."""
        frames = np.asarray(frames)
        if frames.dtype == np.uint8:
            x = frames.astype(np.float32)
            x *= 1.0 / 255.0
        else:
            x = frames.astype(np.float32, copy=False)
        n, h, w = x.shape[:3]
        first = int(first_output)
        if not 0 <= first < 2 * n - 1:
            raise ValueError(f"first_output must be in [0, {2 * n - 1}), got {first_output}")
        x = pad_frames(x)
        hp, wp = x.shape[1:3]
        plan = self.plan(h, w)
        if plan is None:
            ty, tx = [0], [0]
            th, tw = hp, wp
        else:
            th, tw = plan
            ty = tile_starts(hp, th, self.overlap)
            tx = tile_starts(wp, tw, self.overlap)
        tiles = [(y0, x0) for y0 in ty for x0 in tx]
        jobs = [(t, f) for t in range(len(tiles)) for f in range(len(self.flips))]
        single = len(tiles) == 1
        nflips = len(self.flips)
        if not single:
            wy = dict(zip(ty, ramp_weights([v * SCALE for v in ty], th * SCALE, hp * SCALE, self.overlap * SCALE)))
            wx = dict(zip(tx, ramp_weights([v * SCALE for v in tx], tw * SCALE, wp * SCALE, self.overlap * SCALE)))
            out = np.zeros((2 * n - 1 - first, hp * SCALE, wp * SCALE, 3), np.float32)
        ens = None
        calls = -(-len(jobs) // self.batch)
        for b0 in range(0, len(jobs), self.batch):
            chunk = jobs[b0:b0 + self.batch]
            inp = []
            for t, f in chunk:
                y0, x0 = tiles[t]
                patch = x[:, y0:y0 + th, x0:x0 + tw]
                for ax in self.flips[f]:
                    patch = np.flip(patch, axis=ax - 1)
                inp.append(patch)
            batch_in = inp[0][None] if len(inp) == 1 else np.stack(inp)
            pred = self.predict(np.ascontiguousarray(batch_in), first)
            for (t, f), y in zip(chunk, pred):
                for ax in self.flips[f]:
                    y = np.flip(y, axis=ax - 1)
                if nflips == 1:
                    ens = y
                elif f == 0:
                    ens = y * (1.0 / nflips)
                else:
                    ens += y * (1.0 / nflips)   # flips of one tile are consecutive
                if f != nflips - 1:
                    continue
                if single:
                    out = ens
                else:
                    y0, x0 = tiles[t]
                    wgt = wy[y0][:, None, None] * wx[x0][None, :, None]
                    dst = out[:, y0 * SCALE:(y0 + th) * SCALE, x0 * SCALE:(x0 + tw) * SCALE]
                    dst += ens * wgt
                ens = None
            del pred
            if progress is not None:
                progress.advance((2 * n - 1 - first) / calls)
        out = out[:, :h * SCALE, :w * SCALE]
        if out.flags.writeable:
            return np.clip(out, 0.0, 1.0, out=out)
        return np.clip(out, 0.0, 1.0)

    # ------------------------------------------------------------------------------------ clip
    def stream(self, frames: Iterable[np.ndarray], progress: Progress = SILENT) -> Iterator[np.ndarray]:
        """Input frames (uint8 ``[H, W, 3]``) -> the ``2K-1`` output frames (uint8), in order.

        Holds at most ``window`` input frames (plus, when pipelined, ``window`` decoded ahead and
        ``2*window-1`` outputs waiting for the consumer). Raises ``ValueError`` for fewer than 2
        frames, :class:`zsm_tf.memory.MemoryBudgetError` if the frames cannot fit the budget.
        ``progress`` (:class:`zsm_tf.progress.Progress`) is advanced in output frames after
        every model call, so it moves within the first window; it is described while the first
        call (which traces the model) runs. The windows are :func:`window_schedule`'s."""
        if not self.pipeline:
            yield from self._stream(iter(frames), progress)
            return
        src = _Background(iter(frames), depth=self.window)
        out = _Background(self._stream(src, progress), depth=self.queued_outputs())
        try:
            yield from out
        finally:
            out.close(timeout=1.0)
            src.close(timeout=10.0)

    def _stream(self, frames: Iterator[np.ndarray], progress: Progress) -> Iterator[np.ndarray]:
        buf: List[np.ndarray] = []
        read = 0
        emitted = 0   # global output index of the next frame to yield
        first = True

        def run(call):
            nonlocal emitted, first
            start, skip = call   # buf holds input frames start .. read - 1
            traced = getattr(self.predict, "trace_seconds", 0.0)
            if first:
                progress.describe("first window (tracing the model)")
            out = self.upscale_window(np.stack(buf), progress=progress, first_output=skip)
            # tracing is one-time work: rates and ETA from the first window on leave it out
            progress.exclude(getattr(self.predict, "trace_seconds", 0.0) - traced)
            if first:
                progress.describe("upscale")
                first = False
            for j in range(out.shape[0]):
                emitted = 2 * start + skip + j + 1
                yield to_uint8(out[j])

        for f in frames:
            if read == 0:
                self.plan(*np.shape(f)[:2])   # a job that cannot fit fails before any work
            buf.append(f)
            if len(buf) > self.window:
                buf.pop(0)
            read += 1
            call = _due_call(read, self.window, emitted, ended=False)
            if call is not None:
                yield from run(call)
        if read < 2:
            raise ValueError(f"need at least 2 frames, got {read}")
        call = _due_call(read, self.window, emitted, ended=True)
        if call is not None:
            yield from run(call)


class _Background:
    """Iterates ``it`` in a daemon thread, at most ``depth`` items ahead of the consumer.

    Errors raised by ``it`` are raised to the consumer; :meth:`close` stops the thread after
    its current item (a consumer that stops early, Ctrl-C)."""

    def __init__(self, it: Iterator, depth: int):
        import queue
        import threading

        self._queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, args=(it,), daemon=True)
        self._thread.start()

    def _put(self, msg) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(msg, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _run(self, it):
        try:
            for item in it:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(("error", e))

    def __iter__(self):
        return self

    def __next__(self):
        import queue

        while True:
            if self._closed:
                raise StopIteration
            try:
                kind, value = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind == "item":
                return value
            self._closed = True
            if kind == "end":
                raise StopIteration
            raise value

    def close(self, timeout: float = 1.0) -> None:
        self._closed = True
        self._stop.set()
        self._thread.join(timeout)


def _due_call(read: int, window: int, emitted: int, ended: bool) -> Optional[Tuple[int, int]]:
    """The window rule, the one place it is written: after ``read`` input frames (``ended``: no
    more come), with the outputs before ``emitted`` given, the model call due now as
    ``(start, first_output)``, or None. Windows start at ``0, N-1, 2(N-1)...`` and overlap by
    one frame; at the end a last window is moved back to end on the last frame (full ``N``
    frames of context, same shape). A window computes only the outputs not yet given (the
    frame it shares with the window before, more for the moved-back one). Every call ends on the
    last frame read, so afterwards ``emitted`` is ``2 read - 1``."""
    if not ended:
        if read < window or (read - 1) % (window - 1):
            return None
        start = read - window
    elif emitted < 2 * read - 1:
        start = max(read - window, 0)
    else:
        return None
    return start, max(emitted - 2 * start, 0)


def window_schedule(num_frames: int, window: int) -> List[Tuple[int, int]]:
    """The model calls :meth:`SpaceTimeUpscaler.stream` makes for a clip of ``num_frames`` input
    frames: ``(start, first_output)`` per window, in order (window ``i`` covers input frames
    ``start .. start + window - 1``, clipped to the clip, and computes its outputs from
    ``first_output`` on: outputs ``2 start + first_output`` up to the next window's first).
    Together they compute each of the ``2 num_frames - 1`` outputs once."""
    if num_frames < 2:
        raise ValueError(f"need at least 2 frames, got {num_frames}")
    calls, emitted = [], 0
    for read in [*range(1, num_frames + 1), None]:   # None: the end of the clip
        call = (_due_call(num_frames, window, emitted, ended=True) if read is None
                else _due_call(read, window, emitted, ended=False))
        if call is not None:
            calls.append(call)
            emitted = 2 * (read or num_frames) - 1
    return calls


def to_uint8(frame: np.ndarray) -> np.ndarray:
    return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
