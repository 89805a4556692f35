"""``zsm-tf convert-weights SRC DST.weights.h5``: the authors' checkpoint as Keras weights.

SRC is the authors' ``xiang2020zooming.pth`` (needs torch: ``pip install zsm-tf[convert]``) or an
``.npz`` of name -> array; ``model_config.json`` is written beside DST (refused if one there
describes another model). The work is :func:`zsm_tf.official_checkpoint.convert_file`.
"""
from __future__ import annotations

import json
import sys

from zsm_tf.commands.common import CommandError, add_debug_arg, parser_for, quiet_tf, run_command

PROG = "zsm-tf convert-weights"


def build_parser():
    p = parser_for(PROG, "Convert the authors' Zooming Slow-Mo checkpoint (xiang2020zooming.pth or an "
                         ".npz of name -> array) to a Keras .weights.h5 file.")
    p.add_argument("src", help="the authors' checkpoint: .pth/.pt (needs torch) or .npz")
    p.add_argument("dst", help="output .weights.h5 (model_config.json is written beside it; "
                               "refused if one there describes another model)")
    add_debug_arg(p)
    return p


def run(args) -> int:
    quiet_tf()
    from zsm_tf.official_checkpoint import convert_file

    try:
        model = convert_file(args.src, args.dst)
    except FileNotFoundError as e:   # status 2 like every other checkpoint problem
        raise CommandError(str(e), status=2) from None
    except OSError as e:
        msg = e.strerror or str(e)
        raise CommandError(f"{e.filename}: {msg}" if e.filename else msg, status=2) from None
    except RuntimeError as e:   # torch's unpickling errors
        raise CommandError(str(e).strip().splitlines()[0] if str(e).strip() else "RuntimeError",
                           status=2) from None
    sizes = {k: model.get_config()[k] for k in ("nf", "groups", "front_rbs", "back_rbs")}
    print(f"wrote {args.dst} ({model.count_params():,} parameters; config {json.dumps(sizes)})")
    return 0


def main(argv=None) -> int:
    return run_command(PROG, build_parser(), run, argv, status=2)


if __name__ == "__main__":
    sys.exit(main())
