"""What every command shares: one error wrapper and one argument vocabulary.

:func:`run_command` parses the arguments and runs a command, turning what can go wrong into one
line ``PROG: error: ...`` and an exit status, never a traceback (``--debug`` or ``ZSM_TF_DEBUG=1``
shows it):

========================================================  ==========================================
a problem the user can fix (:data:`USER_ERRORS`: bad      the message; the command's ``status``
input, model, config, export, argument value)             (1, or 2 for train.py and convert-weights)
:class:`CommandError`                                     the message; its own status
Ctrl-C / SIGTERM                                          "interrupted" / "terminated" (+ the
                                                          exception's ``resume_hint``); 130 / 143
``MemoryError`` / TF's ``ResourceExhaustedError``         "out of memory" and what to lower; 1
``OSError``                                               file name and the system's reason; 1
anything else                                             "unexpected <Type>: <first line>"; 1
========================================================  ==========================================

The vocabulary (:func:`add_model_args`, :func:`add_output_args`, :func:`add_debug_arg`) names
each option the same way in every command that has it: ``--weights`` and ``--config`` pick the
model, ``--window``, ``--tile``, ``--max-memory``, ``--precision`` shape inference, ``--debug``
shows tracebacks, ``-q`` silences progress.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys

from zsm_tf.errors import one_line
from zsm_tf.io.formats import MediaError
from zsm_tf.loading import ModelLoadError
from zsm_tf.run_dir import CONFIG_NAME


class CommandError(Exception):
    """A problem the user can fix, with the exit status to end on (default 1)."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


def user_errors():
    """The exception types whose message is the whole story for a user (one line each)."""
    checks = sys.modules.get("zsm_tf.serving.checks")   # not imported: none raised (and no TF import)
    return (MediaError, ModelLoadError, ValueError) + ((checks.ExportError,) if checks else ())


OUT_OF_MEMORY = "out of memory; lower --max-memory (smaller tiles) or use --tile (e.g. --tile 128)"


def run_command(prog, parser, run, argv=None, status=1, interrupt_hint=None) -> int:
    """``run(args)`` with ``args = parser.parse_args(argv)``; returns the exit status.

    ``status``: the exit status of a user error; ``interrupt_hint``: ``args -> str`` appended to
    the "interrupted" line (e.g. how to resume)."""
    from zsm_tf import interrupts

    if argv is None:   # the process's own command line: Ctrl-C / SIGTERM end it cleanly
        interrupts.install(prog)
    interrupts.set_context(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:   # --help (0) or a usage error (2, message printed by argparse)
        return int(e.code or 0)
    if interrupt_hint is not None:
        interrupts.set_context(hint=lambda: interrupt_hint(args))
    status = _run_command(prog, run, args, status, interrupt_hint)
    swallowed = interrupts.pending() if interrupts.installed() else None
    if swallowed is not None:   # a signal whose exception something swallowed: still an interrupt
        interrupts.acknowledge()
        hint = interrupt_hint(args) if interrupt_hint is not None else None
        word = interrupts.word(swallowed)
        print(f"{prog}: error: {word}{'; ' + hint if hint else ''}", file=sys.stderr)
        status = interrupts.STATUS[swallowed]
    if interrupts.installed() and (status in (130, 143) or interrupts.busy_threads()):
        interrupts.exit_now(status)   # no interpreter teardown under a thread still in TensorFlow
    return status


def _run_command(prog, run, args, status, interrupt_hint) -> int:
    debug = bool(getattr(args, "debug", False) or os.environ.get("ZSM_TF_DEBUG"))
    if debug:
        os.environ["ZSM_TF_DEBUG"] = "1"

    def err(msg):
        print(f"{prog}: error: {msg}", file=sys.stderr)

    from zsm_tf.interrupts import Terminated

    try:
        return int(run(args) or 0)
    except CommandError as e:
        err(e)
        return e.status
    except KeyboardInterrupt as e:
        from zsm_tf.interrupts import acknowledge

        acknowledge()
        if debug and not isinstance(e, Terminated):
            raise
        hint = getattr(e, "resume_hint", None) or (interrupt_hint(args) if interrupt_hint else None)
        hint = hint or "nothing was saved; run the same command again to start over"
        err(("terminated" if isinstance(e, Terminated) else "interrupted") + (f"; {hint}" if hint else ""))
        return 143 if isinstance(e, Terminated) else 130
    except MemoryError:
        err(OUT_OF_MEMORY)
    except Exception as e:  # no traceback for the user; --debug shows it
        if isinstance(e, user_errors()):
            if debug:
                raise
            hint = getattr(e, "resume_hint", None)
            err(one_line(e, 400) + (f"; {hint}" if hint else ""))
            return status
        if debug:
            raise
        if type(e).__name__ == "ResourceExhaustedError":
            err(OUT_OF_MEMORY)
        elif isinstance(e, OSError):
            err(f"{e.filename + ': ' if getattr(e, 'filename', None) else ''}{e.strerror or e}"
                + (f"; {e.resume_hint}" if getattr(e, "resume_hint", None) else ""))
        else:
            err(f"unexpected {type(e).__name__}: {one_line(e)} (--debug for the traceback)"
                + (f"; {e.resume_hint}" if getattr(e, "resume_hint", None) else ""))
    return 1


def parser_for(prog, doc) -> argparse.ArgumentParser:
    """A parser whose description is ``doc``'s first paragraph and epilog the rest."""
    parts = (doc or "").strip().split("\n\n")
    return argparse.ArgumentParser(prog=prog, description=parts[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n\n".join(parts[1:]) or None)


def add_debug_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow's log")


def add_weights_args(p) -> None:
    p.add_argument("--weights", help="a .weights.h5 file, a .keras file or a training output dir "
                                     "(default: the shipped zsm_tf/weights/)")
    p.add_argument("--config", help=f"JSON of ZoomingSlowMo arguments (default: {CONFIG_NAME} beside "
                                    "the weights, or <name>.json)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model and how it runs: --weights --config --window --tile --tile-overlap --max-memory
    --precision --batch --self-ensemble."""
    g = p.add_argument_group("model")
    add_weights_args(g)
    g.add_argument("--window", type=int, help="input frames per model call (default: the window the "
                                              "weights were trained with, from model_config.json; 4)")
    g.add_argument("--tile", type=int, help="split frames into SxS tiles (input pixels, multiple of 4) "
                                            "blended over their overlap (default: chosen from "
                                            "--max-memory)")
    g.add_argument("--tile-overlap", type=int, help="tile overlap in input pixels (default tile/4; "
                                                    "16 for automatic tiles)")
    g.add_argument("--max-memory", help="memory budget, e.g. 6G or 800M (default: 80%% of the "
                                        "available memory, at most 5 GiB)")
    g.add_argument("--precision", choices=("float32", "bfloat16", "auto"), default="auto",
                   help="compute precision (default auto: bfloat16 where the CPU/GPU has it and the "
                        "weights' recorded quality cost is at most 0.05 dB, else float32)")
    g.add_argument("--batch", type=int, default=1, help="tiles (x flips) per model call (default 1)")
    g.add_argument("--self-ensemble", action="store_true",
                   help="average the outputs of the 4 flips (4x slower, slightly better)")


# a library setting (the upscaler's and the video job's arguments) -> the option that sets it
SETTING_FLAGS = {"window": "--window", "tile": "--tile", "overlap": "--tile-overlap",
                 "batch": "--batch", "max_memory": "--max-memory", "self_ensemble": "--self-ensemble",
                 "precision": "--precision", "fps": "--fps", "fps_mode": "--fps-mode", "crf": "--crf",
                 "segment_frames": "--segment-frames", "segment_seconds": "--segment-seconds",
                 "overwrite": "--overwrite", "strict": "--strict", "resume": "--no-resume"}


def check_model_args(args) -> None:
    """The upscaler's own validation (:func:`zsm_tf.inference.check_settings`), said with the
    options' names."""
    from zsm_tf.inference import check_settings

    if args.tile_overlap is not None and args.tile is None:
        raise ValueError("--tile-overlap needs --tile")
    with options_named():
        check_settings(args.window, args.tile, args.tile_overlap, args.batch)
    if getattr(args, "max_memory", None):
        from zsm_tf.memory import parse_size

        try:
            parse_size(args.max_memory)
        except ValueError as e:
            raise ValueError(f"--max-memory: {e}") from None


def weights_path(args):
    """The weights the command uses: ``--weights`` or the shipped ones."""
    from zsm_tf.loading import shipped_weights

    if getattr(args, "weights", None):
        return args.weights
    try:
        return shipped_weights()
    except ModelLoadError as e:   # the library says "name a model": the option that does
        raise ModelLoadError(f"{e} with --weights PATH") from None


def build_upscaler(args, model, pipeline=False):
    """The :class:`~zsm_tf.inference.SpaceTimeUpscaler` that the model options of ``args`` ask
    for; an option not given leaves the library's default (the model's record: window, bf16 cost;
    automatic tiles; the default memory budget), so the tool and the library agree."""
    from zsm_tf.inference import SpaceTimeUpscaler
    from zsm_tf.memory import parse_size

    max_memory = getattr(args, "max_memory", None)
    try:
        max_memory = parse_size(max_memory) if max_memory else None
    except ValueError as e:
        raise ValueError(f"--max-memory {e}") from None
    given = {"window": args.window, "tile": args.tile, "overlap": args.tile_overlap,
             "precision": getattr(args, "precision", None), "max_memory": max_memory}
    return SpaceTimeUpscaler(model, self_ensemble=args.self_ensemble, batch=args.batch,
                             pipeline=pipeline, **{k: v for k, v in given.items() if v is not None})


@contextlib.contextmanager
def options_named():
    """Inside: the library's typed errors (a bad upscaler setting, a budget that cannot fit, a
    video job's :class:`~zsm_tf.pipeline.job.JobSettingError`) come out as ``ValueError`` /
    ``MediaError`` naming the options that set them, and so does a resume hint."""
    from zsm_tf.inference import UpscaleSettingError
    from zsm_tf.memory import MemoryBudgetError
    from zsm_tf.pipeline.job import JobSettingError

    try:
        yield
    except UpscaleSettingError as e:
        raise ValueError(f"{SETTING_FLAGS[e.name]} {e.problem}") from None
    except MemoryBudgetError as e:
        raise ValueError(e.advice("--max-memory", "--window")) from None
    except JobSettingError as e:
        said = MediaError(e.said.said_with(SETTING_FLAGS))
        if getattr(e, "resume_hint", None):
            said.resume_hint = _named(e.resume_hint)
        raise said from None
    except BaseException as e:
        if getattr(e, "resume_hint", None):
            e.resume_hint = _named(e.resume_hint)
        raise


def _named(text) -> str:
    return text.said_with(SETTING_FLAGS) if hasattr(text, "said_with") else text


def quiet_tf() -> None:
    """Imports TensorFlow without its start-up log lines (see :mod:`zsm_tf.quiet`)."""
    from zsm_tf.quiet import quiet_tf as _quiet

    _quiet()
