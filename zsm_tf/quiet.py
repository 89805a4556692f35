"""Starting TensorFlow without its start-up log lines on stderr.

TensorFlow's C++ code writes lines such as ``cudart_stub.cc: Could not find cuda drivers``,
``cpu_feature_guard.cc: This TensorFlow binary is optimized...`` and, on a machine with CUDA
libraries but no usable GPU, ``failed call to cuInit: ... UNKNOWN ERROR (303)`` (an ERROR-level
line when the devices are first listed). They are written before logging is configured, so the
only way to hide them is to point file descriptor 2 elsewhere while TensorFlow is imported and
its devices initialised. ``ZSM_TF_DEBUG=1`` (or a command's ``--debug``) shows them.
"""
from __future__ import annotations

import os
import sys

_DONE = False


def quiet_tf() -> None:
    """Imports TensorFlow and initialises its devices with stderr silenced (once per process).

    An import error is raised as usual, after stderr is restored."""
    global _DONE
    if _DONE:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("ZSM_TF_DEBUG"):
        _DONE = True
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                import tensorflow as tf

                tf.config.list_physical_devices()   # cuInit and friends happen here, silenced
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)
    _DONE = True
