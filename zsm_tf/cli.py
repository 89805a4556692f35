"""The ``zsm-tf`` command: ``zsm-tf <command> [args]``.

Each command lives in its own module of :mod:`zsm_tf.commands` and exposes ``main(argv) -> int``;
this file only dispatches,
importing the command's module (and so TensorFlow) only when that command runs.
"""
from __future__ import annotations

import importlib
import sys

from zsm_tf.commands import COMMANDS


def _usage() -> str:
    lines = ["usage: zsm-tf <command> [options]", "", "commands:"]
    lines += [f"  {name:<16} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\nRun 'zsm-tf <command> --help' for a command's options.")
    return "\n".join(lines)


def main(argv=None) -> int:
    from zsm_tf import interrupts

    argv_is_process = argv is None
    if argv_is_process:   # the process's command line: Ctrl-C / SIGTERM from here on end it cleanly
        interrupts.install("zsm-tf")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"zsm-tf: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if argv_is_process:
        interrupts.set_context(f"zsm-tf {name}")
    try:
        if name in ("export", "demo") and not ({"-h", "--help"} & set(rest)):
            from zsm_tf.quiet import quiet_tf  # these start TensorFlow right away: no start-up banner

            quiet_tf()
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
    except KeyboardInterrupt as e:   # Ctrl-C / SIGTERM while starting (importing, parsing the
        # arguments: before the command's own handling begins): nothing to keep
        from zsm_tf.interrupts import Terminated, acknowledge, exit_now, installed

        acknowledge()

        print(f"zsm-tf {name}: error: {'terminated' if isinstance(e, Terminated) else 'interrupted'}; "
              f"nothing was saved; run the same command again to start over", file=sys.stderr)
        status = 143 if isinstance(e, Terminated) else 130
        if installed():
            exit_now(status)
        return status


if __name__ == "__main__":
    sys.exit(main())
