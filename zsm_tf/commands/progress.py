"""A sign of life for commands with long silent phases (TensorFlow start-up, building and tracing
the model: minutes on a CPU): :func:`heartbeat`."""
from __future__ import annotations

import contextlib
import sys
import threading
import time


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
def heartbeat(prog: str, what: str = "working", every: float = 30.0):
    """While the block runs, prints ``PROG: still working (M:SS) ...`` on stderr whenever
    ``every`` seconds pass with nothing written to stdout or stderr."""
    last = [time.monotonic()]
    t0 = last[0]
    stop = threading.Event()
    out, err = sys.stdout, sys.stderr

    def beat():
        while not stop.wait(min(every, 1.0)):
            now = time.monotonic()
            if now - last[0] >= every:
                s = int(now - t0)
                err.write(f"{prog}: still {what} ({s // 60}:{s % 60:02d})\n")
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
