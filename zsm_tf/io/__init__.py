"""Reading and writing frames: videos through PyAV (FFmpeg), images through Pillow.

Everything streams: a source yields one ``uint8 [H, W, 3]`` RGB frame at a time and a writer
takes one at a time. One concern per module:

* :mod:`~zsm_tf.io.formats`: file kinds, output containers, path checks, :class:`MediaError`;
* :mod:`~zsm_tf.io.images`: image files (read, list in natural order, write a PNG atomically);
* :mod:`~zsm_tf.io.sources`: :func:`open_source`, a video or an image folder as frames;
* :mod:`~zsm_tf.io.colour`: decoded frame <-> RGB with the stream's matrix and range;
* :mod:`~zsm_tf.io.audio`: audio / subtitle streams copied into an output;
* :mod:`~zsm_tf.io.writers`: :func:`open_writer`, a video or PNG folder written atomically;
* :mod:`~zsm_tf.io.segments`: output in committed, resumable segments (``zsm-tf upscale``).

Problems the user can fix (missing file, not a video, corrupt stream, unwritable output...) raise
:class:`MediaError` with a one-line message.
"""
from zsm_tf.io.audio import StreamCopier
from zsm_tf.io.colour import frame_colour, rgb_to_video_frame, to_rgb24
from zsm_tf.io.formats import (
    DEFAULT_IMAGE_FPS,
    IMAGE_EXTS,
    VIDEO_EXTS,
    VIDEO_INPUT_EXTS,
    MediaError,
    check_output_path,
    container_format,
    container_of,
    is_video_path,
)
from zsm_tf.io.images import list_images, read_image, write_png
from zsm_tf.io.sources import FrameSource, SourceInfo, StreamScan, open_source
from zsm_tf.io.writers import open_writer

__all__ = [
    "DEFAULT_IMAGE_FPS", "IMAGE_EXTS", "VIDEO_EXTS", "VIDEO_INPUT_EXTS", "FrameSource", "MediaError",
    "SourceInfo", "StreamCopier", "StreamScan", "check_output_path", "container_format",
    "container_of", "frame_colour", "is_video_path", "list_images", "open_source", "open_writer",
    "read_image", "rgb_to_video_frame", "to_rgb24", "write_png",
]
