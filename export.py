"""Export a trained model for TensorFlow Serving: ``python export.py --help``.

``python train.py && python export.py`` exports the latest run of train.py's default output dir
(``runs/zsm``) to ``exported/zsm/<next version>/``. See ``zsm_tf/commands/export.py`` and docs/serving.md.
"""
import sys

from zsm_tf.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
