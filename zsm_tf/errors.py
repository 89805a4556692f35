"""One-line error messages for users (commands print them instead of tracebacks)."""
from __future__ import annotations


def one_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (TensorFlow errors: their ``message``), at most
    ``limit`` characters; the exception's type name when it has no message."""
    text = (getattr(e, "message", None) or str(e) or "").strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__
