"""Ctrl-C and SIGTERM at any moment of a command: one line, exit 130 / 143, never a C++ abort.

A command run as a process (``zsm-tf ...``, ``python train.py``, ``python export.py``) calls
:func:`install` first. Then:

* SIGINT raises ``KeyboardInterrupt`` and SIGTERM :class:`Terminated` (a KeyboardInterrupt), in
  the main thread only (Python runs signal handlers there), so the command's own clean-up runs:
  committed work is kept, partial files removed, and the wrapper prints "interrupted" /
  "terminated" with what to do next.
* The process then ends with :func:`exit_now`: ``os._exit`` after flushing stdout and stderr.
  A normal interpreter exit would tear TensorFlow down while a pipeline thread may still be
  inside it (tracing or running the first window): its C++ code then aborts the process
  ("terminate called after throwing ...", "FATAL: exception not rethrown", exit 134).
* When the main thread itself is inside TensorFlow (a trace or a training step can take minutes
  on a CPU), Python cannot run the handler until it returns; a watchdog thread, woken by the
  signal through :func:`signal.set_wakeup_fd`, prints the line and exits after
  :data:`GRACE_S` seconds (train.py: 60, so an interrupted step is saved) unless the command has
  caught the interrupt by then (:func:`acknowledge`); this also covers an interrupt swallowed
  where Python ignores exceptions (a ``__del__``, a weakref callback). A second signal
  while the first is being handled also exits at once.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Callable, Optional

GRACE_S = 3.0
STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""


_state = {"installed": False, "prog": "zsm-tf", "hint": None, "handled": False, "acked": False,
          "grace": GRACE_S, "signum": None, "defer": 0}


def word(sig) -> str:
    return "terminated" if sig == signal.SIGTERM else "interrupted"


def installed() -> bool:
    """True in a command run as a process (:func:`install` was called)."""
    return _state["installed"]


def set_context(prog: Optional[str] = None, hint: Optional[Callable[[], Optional[str]]] = None,
                grace: Optional[float] = None) -> None:
    """The command's name, what to tell the user if the watchdog has to end the process, and
    how long it waits for the main thread first (seconds)."""
    if prog:
        _state["prog"] = prog
    if hint is not None:
        _state["hint"] = hint
    if grace is not None:
        _state["grace"] = grace


def acknowledge() -> None:
    """The command caught the interrupt and is cleaning up (the watchdog stands down)."""
    _state["acked"] = True


def _handler(signum, frame):
    if _state["handled"]:            # a second signal during the clean-up of the first: leave now
        _message(signum, "a second signal: leaving at once; what was committed is kept, run the "
                         "same command again to resume")
        exit_now(STATUS[signum])
    _state["handled"] = True
    _state["signum"] = signum
    if _state["defer"]:   # inside deferred(): recorded, raised by raise_pending() afterwards
        return
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def deferred():
    """Signals inside are recorded, not raised: for calls into TensorFlow that call back into
    Python (tracing a step), where an exception raised by the handler can be swallowed or printed
    by C code. Call :func:`raise_pending` after; the watchdog still ends a call that outlasts
    the grace period."""
    _state["defer"] += 1
    try:
        yield
    finally:
        _state["defer"] -= 1


def pending() -> Optional[int]:
    """The signal that was raised and not yet caught by the command (:func:`acknowledge`), or
    None. Set when the exception was swallowed: raised inside C code that called back into
    Python (``__import__`` under ``tf.nest``: a SystemError there) or in a ``__del__``."""
    return _state["signum"] if _state["handled"] and not _state["acked"] else None


def raise_pending() -> None:
    """Raises the interrupt again if one was swallowed (:func:`pending`): long loops call it at
    safe points (each training step), so a swallowed Ctrl-C still stops them there."""
    signum = pending()
    if signum is not None:
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _message(signum, hint=None) -> None:
    if hint is None and _state["hint"] is not None:
        try:
            hint = _state["hint"]()
        except Exception:   # noqa: BLE001 - the message must come out
            hint = None
    try:
        sys.stderr.write(f"\n{_state['prog']}: error: {word(signum)}{'; ' + hint if hint else ''}\n")
    except Exception:   # noqa: BLE001
        pass


def _watchdog(fd) -> None:
    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if not data:
            return
        signum = data[-1]
        if signum not in STATUS:
            continue
        t0 = time.monotonic()
        while time.monotonic() - t0 < _state["grace"]:
            if _state["acked"]:
                break
            time.sleep(0.05)
        else:   # the main thread is inside C++ code (TensorFlow), or the exception was swallowed
            _message(signum)   # (raised inside a __del__ or a callback that ignores errors)
            exit_now(STATUS[signum])


def install(prog: Optional[str] = None) -> None:
    """SIGINT / SIGTERM handled as described in the module docstring (main thread only)."""
    set_context(prog)
    if _state["installed"] or threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    try:
        r, w = os.pipe()
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        threading.Thread(target=_watchdog, args=(r,), daemon=True, name="zsm-signal-watchdog").start()
    except (OSError, ValueError):
        pass
    _state["installed"] = True


def exit_now(status: int) -> None:
    """Flushes stdout / stderr and ends the process with ``status`` (no interpreter teardown)."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:   # noqa: BLE001
            pass
    os._exit(status)


def busy_threads() -> bool:
    """True while a thread other than the main one and the watchdog is alive (e.g. a pipeline
    thread still inside TensorFlow)."""
    main = threading.main_thread()
    return any(t is not main and t.is_alive() and t.name not in ("zsm-signal-watchdog", "zsm-heartbeat")
               for t in threading.enumerate())
