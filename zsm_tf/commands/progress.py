"""What the user sees of long work: :class:`BarProgress`, the commands' rendering of the library's
one progress interface (:class:`zsm_tf.progress.Progress`: bars with frames/s and ETA, notes),
and :func:`heartbeat`, a sign of life for commands with long silent phases (TensorFlow start-up,
building and tracing the model: minutes on a CPU)."""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Mapping, Optional

from zsm_tf.progress import Progress


class _Watched:
    """A text stream that records when it was last written to."""

    def __init__(self, stream, last):
        self._stream, self._last = stream, last

    def write(self, text):
        if text:
            self._last[0] = time.monotonic()
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def heartbeat(prog: str, what="working", every: float = 30.0):
    """While the block runs, prints ``PROG: still WHAT (M:SS)`` on stderr whenever ``every``
    seconds pass with nothing written to stdout or stderr; ``what``: a phrase, or a function
    returning the phrase of the moment (the phase of the work)."""
    last = [time.monotonic()]
    t0 = last[0]
    stop = threading.Event()
    out, err = sys.stdout, sys.stderr

    def beat():
        while not stop.wait(min(every, 1.0)):
            now = time.monotonic()
            if now - last[0] >= every:
                s = int(now - t0)
                phrase = what() if callable(what) else what
                err.write(f"{prog}: still {phrase} ({s // 60}:{s % 60:02d})\n")
                err.flush()
                last[0] = now

    sys.stdout, sys.stderr = _Watched(out, last), _Watched(err, last)
    t = threading.Thread(target=beat, daemon=True, name="zsm-heartbeat")
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(2.0)
        sys.stdout, sys.stderr = out, err


class BarProgress(Progress):
    """A :class:`~zsm_tf.progress.Progress` on stderr: a tqdm bar per task (rate and ETA), notes as
    ``PROG: note: ...`` lines (a note that names settings, :class:`zsm_tf.pipeline.job.Said`, is
    said with ``names``: the options); ``quiet``: neither."""

    def __init__(self, prog: str, quiet: bool = False, names: Optional[Mapping[str, str]] = None):
        self.prog, self.quiet, self.names = prog, quiet, dict(names or {})
        self._bar = None

    def start(self, total, unit="frame", desc="", done=0, keep=True):
        self.close()
        if not self.quiet:
            from tqdm import tqdm

            # smoothing=0: the rate is the average since the start (less what exclude() took
            # out), steady for windows of equal cost; tqdm's moving average would carry the
            # first window's tracing for many updates
            self._bar = tqdm(total=total, initial=done, unit=unit, desc=desc, leave=keep,
                             dynamic_ncols=True, file=sys.stderr, smoothing=0)

    def advance(self, n=1):
        if self._bar is not None:
            self._bar.update(n)

    def describe(self, text):
        if self._bar is not None:
            self._bar.set_description(text)

    def exclude(self, seconds):
        if self._bar is not None and seconds > 0:
            bar = self._bar
            bar.start_t = min(bar.start_t + seconds, bar._time())
            bar.refresh()
            # it has just been drawn: tqdm's close() ends a bar with a newline only when it was
            # drawn after start_t (else "never shown, nothing to clear"), and start_t just moved
            # past its last draw: without this, the line after an interrupt right after the
            # tracing would follow the bar on the same line
            bar.last_print_t = max(bar.last_print_t, bar.start_t)

    def note(self, msg):
        if self.quiet:
            return
        text = msg.said_with(self.names) if hasattr(msg, "said_with") else str(msg)
        if self._bar is not None:
            self._bar.clear()
        print(f"{self.prog}: note: {text}", file=sys.stderr)
        if self._bar is not None:
            self._bar.refresh()

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
