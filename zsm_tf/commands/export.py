"""``python export.py`` / ``zsm-tf export``: a trained model as a SavedModel for TF Serving.

Writes the TF Serving layout ``DIR/<V>/`` (``saved_model.pb``, ``variables/``,
``assets.extra/tf_serving_warmup_requests``) with two signatures, ``serving_default`` (uint8
``[batch, N, H, W, 3]`` -> ``[batch, 2N-1, 4H, 4W, 3]``) and ``predict_float`` (float32 in [0, 1]),
checked with TF Serving's own session loader before it is published. The work is done by
:mod:`zsm_tf.serving`; this module is the command line.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings

from zsm_tf.commands.common import add_debug_arg, run_command
from zsm_tf.loading import DEFAULT_RUN_DIR, ModelLoadError, load_source, resolve_source
from zsm_tf.serving.checks import ExportError, VersionExistsError
from zsm_tf.serving.saved_model import DEFAULT_OUTPUT_DIR, dir_size, export_model, version_path
from zsm_tf.serving.signatures import INPUT_KEY, SIGNATURE_FLOAT, SIGNATURE_UINT8
from zsm_tf.serving.warmup import DEFAULT_WARMUP_SHAPES


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def _parse_shapes(text):
    if text.strip().lower() in ("", "none"):
        return ()
    shapes = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)x(\d+)x(\d+)\s*", item)
        if not m:
            raise argparse.ArgumentTypeError(f"bad warmup shape {item!r}: want NxHxW, e.g. 3x64x64")
        n, h, w = (int(g) for g in m.groups())
        if n < 2 or h < 1 or w < 1:
            raise argparse.ArgumentTypeError(f"bad warmup shape {item!r}: N >= 2, H, W >= 1")
        shapes.append((n, h, w))
    return tuple(shapes)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {value}")
    return value


PROG = "export.py"


def build_parser(prog=PROG):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Export a trained Zooming Slow-Mo model as a SavedModel for stock TensorFlow "
                    "Serving: OUTPUT_DIR/<version>/ with signatures 'serving_default' (uint8 "
                    "frames [batch, N, H, W, 3] -> [batch, 2N-1, 4H, 4W, 3]) and 'predict_float' "
                    "(float32 in [0, 1]).")
    p.add_argument("--weights", "--checkpoint", dest="checkpoint", default=None, metavar="PATH",
                   help="training output dir (its latest checkpoint, else final.weights.h5), a "
                        "checkpoint prefix, a .weights.h5 (with model_config.json beside it) or a "
                        f".keras file (default: {DEFAULT_RUN_DIR}, train.py's default output)")
    p.add_argument("--config", help="JSON of ZoomingSlowMo arguments (default: model_config.json "
                                    "found with the weights)")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, metavar="DIR",
                   help=f"TF Serving base path of the model (default: {DEFAULT_OUTPUT_DIR})")
    p.add_argument("--version", type=_positive_int, default=None, metavar="V",
                   help="version number (default: the next one); an existing version is an error")
    p.add_argument("--model-name", default=None,
                   help="model name in the warmup requests (default: the output dir's name)")
    p.add_argument("--warmup-shapes", type=_parse_shapes, default=DEFAULT_WARMUP_SHAPES,
                   metavar="NxHxW[,...]",
                   help="input sizes of the warmup requests, batch 1, one per signature each "
                        "(default: 3x64x64; 'none': no warmup file)")
    p.add_argument("--no-check", action="store_true",
                   help="skip loading the export and running the warmup requests before publishing")
    add_debug_arg(p)
    return p


def run(args) -> int:
    prog = PROG
    t0 = time.perf_counter()
    if args.checkpoint is None and not os.path.exists(DEFAULT_RUN_DIR):
        raise ModelLoadError(f"no training run at {DEFAULT_RUN_DIR} (train.py's default output "
                             f"dir, relative to {os.getcwd()}): pass --weights PATH")
    source = resolve_source(DEFAULT_RUN_DIR if args.checkpoint is None else args.checkpoint, args.config)
    out_dir = os.path.abspath(args.output_dir)
    from zsm_tf.commands.progress import heartbeat

    def say(msg):
        print(f"{prog}: {msg}", file=sys.stderr, flush=True)

    try:
        if args.version is not None:
            version_path(out_dir, args.version)   # before the model is loaded
        with heartbeat(prog, "exporting"):
            say(f"loading {source.weights}")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                model, source = load_source(source, deform_impl="gather", return_source=True)
            for w in caught:
                if issubclass(w.category, RuntimeWarning):
                    say(f"warning: {w.message}")
            say("tracing the two signatures and saving" + ("" if args.no_check else ", then loading the "
                "export back and running its warmup requests") + " (a few minutes on a CPU)")
            path = export_model(model, out_dir, version=args.version, model_name=args.model_name,
                                warmup_shapes=args.warmup_shapes, check=not args.no_check)
    except VersionExistsError as e:
        raise ExportError(f"version {e.version} already exists: {e.path} (exports never "
                          f"overwrite; pick another --version or leave it out)") from None
    print(f"exported {source.describe()} -> {path} ({dir_size(path) / 2**20:.1f} MiB, "
          f"{time.perf_counter() - t0:.1f} s); signatures {SIGNATURE_UINT8!r} (uint8) and "
          f"{SIGNATURE_FLOAT!r} (float32), input and output {INPUT_KEY!r}")
    return 0


def main(argv=None) -> int:
    return run_command(PROG, build_parser(), run, argv, interrupt_hint=lambda args: "nothing written")


if __name__ == "__main__":
    sys.exit(main())
