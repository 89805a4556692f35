"""Video jobs around the model: :class:`~zsm_tf.pipeline.video.VideoJob` (input checks and scan,
output timing and audio, resumable segmented output) and its parts: :mod:`~zsm_tf.pipeline.job`
(input facts, overwrite rules, job identity, SIGTERM), :mod:`~zsm_tf.pipeline.resume` (committed
segments, manifest, resume), :mod:`~zsm_tf.pipeline.timing` (output timestamps, VFR)."""
