"""Export a trained model for TensorFlow Serving: ``python export.py --help``.

``python train.py && python export.py`` exports the latest run of train.py's default output dir
(``runs/zsm``) to ``exported/zsm/<next version>/``. See ``zsm_tf/commands/export.py`` and docs/serving.md.
"""
import os
import sys

if __name__ == "__main__":
    from zsm_tf import interrupts

    interrupts.install("export.py")   # Ctrl-C / SIGTERM from the start: one line, 130 / 143
    if "--debug" in sys.argv:
        os.environ["ZSM_TF_DEBUG"] = "1"
    if not {"-h", "--help"} & set(sys.argv[1:]):
        from zsm_tf.quiet import quiet_tf

        quiet_tf()   # TensorFlow starts on the import below: no cuInit / CPU-feature / MLIR lines
    from zsm_tf.commands.export import main

    sys.exit(main())
