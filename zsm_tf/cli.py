"""The ``zsm-tf`` command: ``zsm-tf <command> [args]``.

Each command lives in its own module and exposes ``main(argv) -> int``; this file only dispatches,
importing the command's module (and so TensorFlow) only when that command runs.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "convert-weights": ("zsm_tf.convert", "convert the authors' .pth/.npz checkpoint to .weights.h5"),
    "upscale": ("zsm_tf.upscale", "upscale a video or image folder: 4x size, 2x frame rate"),
    "evaluate": ("zsm_tf.evaluate", "PSNR/SSIM-Y of the model vs bicubic + frame blending"),
    "export": ("zsm_tf.export", "export a SavedModel for TensorFlow Serving (same as export.py)"),
    "demo": ("zsm_tf.demo", "forward pass of the default model on generated frames, timed"),
}


def _usage() -> str:
    lines = ["usage: zsm-tf <command> [options]", "", "commands:"]
    lines += [f"  {name:<16} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\nRun 'zsm-tf <command> --help' for a command's options.")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"zsm-tf: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if name in ("export", "demo") and not ({"-h", "--help"} & set(rest)):
        from zsm_tf.quiet import quiet_tf  # these start TensorFlow right away: no start-up banner

        quiet_tf()
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
