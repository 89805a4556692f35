"""The one progress interface of the library's long work (scanning an input, upscaling a clip).

The library calls a :class:`Progress`; a front end shows it (``zsm-tf upscale``: bars on stderr
with frames/s and ETA, and its notes, :class:`zsm_tf.commands.progress.BarProgress`). This class
itself is the silent default: every method does nothing.

A task is ``start(total, unit, desc)``, then ``advance(n)`` as units are done (fractions allowed,
so that a bar moves within one model call), ``describe(text)`` when what it is doing changes (the
first window traces the model), ``exclude(seconds)`` for one-time work that rates and ETAs should
leave out (the tracing), ``close()`` at its end. ``note(msg)`` is a line for the user at
any time (a ``str``; the video job's notes may name its settings, see
:class:`zsm_tf.pipeline.job.Said`).
"""
from __future__ import annotations


class Progress:
    """Silent progress; subclass and override what you show."""

    def start(self, total: float, unit: str = "frame", desc: str = "", done: float = 0,
              keep: bool = True) -> None:
        """A task of ``total`` units begins, ``done`` of them already done; ``keep``: leave its
        last state on screen when it closes."""

    def advance(self, n: float = 1) -> None:
        """``n`` more units are done."""

    def describe(self, text: str) -> None:
        """What the task is doing now."""

    def exclude(self, seconds: float) -> None:
        """The last ``seconds`` of the task were one-time work (tracing the model): rates and
        ETAs leave them out."""

    def note(self, msg: str) -> None:
        """A line for the user."""

    def close(self) -> None:
        """The task ends."""


SILENT = Progress()


class StatusOnly(Progress):
    """Passes on only ``describe`` and ``exclude`` to ``inner`` (a caller that counts the units
    itself)."""

    def __init__(self, inner: Progress):
        self.inner = inner

    def describe(self, text: str) -> None:
        self.inner.describe(text)

    def exclude(self, seconds: float) -> None:
        self.inner.exclude(seconds)
