"""Video jobs around the model: :class:`~zsm_tf.pipeline.video.VideoJob` (input checks and scan,
output timing and audio, resumable segmented output) and its parts: :mod:`~zsm_tf.pipeline.job`
(input facts, overwrite rules, the job's identity, its typed errors, SIGTERM),
:mod:`~zsm_tf.pipeline.loop` (the main loop), :mod:`~zsm_tf.pipeline.resume` (resuming: work
folder, manifest, committed segments), :mod:`~zsm_tf.pipeline.timing` (output timestamps, VFR)."""
