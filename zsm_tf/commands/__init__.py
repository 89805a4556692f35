"""The command line: one module per command, each ``main(argv) -> int`` on the shared error
wrapper and argument vocabulary of :mod:`zsm_tf.commands.common`. Commands only call down into
the library (``zsm_tf.pipeline``, ``zsm_tf.inference``, ``zsm_tf.loading``, ``zsm_tf.serving``,
``zsm_tf.training``...), never the other way.

``COMMANDS``: ``zsm-tf <name>`` -> (module, one-line help); root ``train.py`` and ``export.py``
are the same commands as ``zsm-tf train`` and ``zsm-tf export``.
"""

COMMANDS = {
    "upscale": ("zsm_tf.commands.upscale", "upscale a video or image folder: 4x size, 2x frame rate"),
    "train": ("zsm_tf.commands.train", "train the model (same as python train.py)"),
    "evaluate": ("zsm_tf.commands.evaluate", "PSNR/SSIM-Y of the model vs bicubic + frame blending"),
    "export": ("zsm_tf.commands.export", "export a SavedModel for TensorFlow Serving (same as export.py)"),
    "convert-weights": ("zsm_tf.commands.convert",
                        "convert the authors' .pth/.npz checkpoint to .weights.h5"),
    "demo": ("zsm_tf.commands.demo", "forward pass of the default model on generated frames, timed"),
}
