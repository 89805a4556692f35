"""Frame writers: a video (H.264 ``yuv420p`` through libx264; VP9 for ``.webm``) with the input's
audio copied, or a folder of PNGs. Writers work on a hidden temporary name beside the output and
rename it at the end, so a failure leaves no partial output. (``zsm-tf upscale`` writes through
:mod:`zsm_tf.io.segments` instead, to resume after a kill.)"""
from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

from zsm_tf.io.audio import StreamCopier
from zsm_tf.io.formats import FORMAT_OF_EXT, MediaError, ff_msg, is_video_path, temp_sibling


class FrameWriter:
    """Writes frames to a temporary name; :meth:`close` publishes, :meth:`abort` removes.

    As a context manager it publishes on success and aborts on any exception."""

    def write(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


class ImageFolderWriter(FrameWriter):
    """PNG frames ``frame_000000.png``... in a folder (created; an existing folder is filled)."""

    def __init__(self, path, compress_level=3):
        self.path = Path(str(path).rstrip("/" + os.sep) or str(path))
        self.compress_level = compress_level
        self.tmp = temp_sibling(self.path)
        try:
            self.tmp.mkdir()
        except OSError as e:
            raise MediaError(f"{path}: cannot write ({e.strerror or e})") from None
        self.count = 0
        self.closed = False

    def write(self, frame):
        from PIL import Image

        try:
            Image.fromarray(np.ascontiguousarray(frame)).save(
                self.tmp / f"frame_{self.count:06d}.png", compress_level=self.compress_level)
        except OSError as e:
            raise MediaError(f"{self.path}: cannot write frame {self.count} ({e.strerror or e})") from None
        self.count += 1

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            if not self.path.exists():
                os.rename(self.tmp, self.path)
            else:
                for f in sorted(self.tmp.iterdir()):
                    os.replace(f, self.path / f.name)
                self.tmp.rmdir()
        except OSError as e:
            self.abort()
            raise MediaError(f"{self.path}: cannot write ({e.strerror or e})") from None

    def abort(self):
        self.closed = True
        shutil.rmtree(self.tmp, ignore_errors=True)


def add_video_stream(out, fmt, width, height, rate, time_base=None, crf=18, preset="medium",
                     colour=None):
    """An H.264 (VP9 for WebM) ``yuv420p`` stream in ``out``, tagged with ``colour`` (see
    :class:`StreamScan`)."""
    if fmt == "webm":
        vs = out.add_stream("libvpx-vp9", rate=rate)
        vs.options = {"crf": str(int(crf) + 13), "b": "0", "row-mt": "1"}
    else:
        vs = out.add_stream("libx264", rate=rate)
        vs.options = {"crf": str(crf), "preset": preset}
    vs.width, vs.height = int(width), int(height)
    vs.pix_fmt = "yuv420p"
    if time_base is not None:
        vs.codec_context.time_base = time_base
    if colour:
        cc = vs.codec_context
        for k in ("color_primaries", "color_trc", "colorspace", "color_range"):
            if colour.get(k) not in (None, 0, 2) or (k == "color_range" and colour.get(k)):
                try:
                    setattr(cc, k, colour[k])
                except (AttributeError, TypeError, ValueError):
                    pass
    return vs



class VideoWriter(FrameWriter):
    """H.264 ``yuv420p`` (libx264; VP9 for ``.webm``) at ``fps``, audio (and subtitles) copied
    from ``audio_from`` with a :class:`StreamCopier`. Frame ``i`` is at ``i / fps``."""

    def __init__(self, path, width, height, fps, audio_from=None, crf=18, preset="medium"):
        import av

        self.path = Path(path)
        self.fmt = FORMAT_OF_EXT[self.path.suffix.lower()]
        self.tmp = temp_sibling(self.path, self.path.suffix)
        self.fps = Fraction(fps)
        self.count = 0
        self.closed = False
        self.out = None
        self.copier = None
        try:
            self.out = av.open(str(self.tmp), "w", format=self.fmt)
            self.vstream = add_video_stream(self.out, self.fmt, width, height, self.fps, crf=crf, preset=preset)
            if audio_from is not None:
                self.copier = StreamCopier(self.out, audio_from, self.fmt)
        except av.error.FFmpegError as e:
            self.abort()
            raise MediaError(f"{path}: cannot write video ({ff_msg(e)})") from None
        except OSError as e:
            self.abort()
            raise MediaError(f"{path}: cannot write ({e.strerror or e})") from None

    def write(self, frame):
        import av

        try:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self.count
            vf.time_base = 1 / self.fps
            if self.copier is not None:
                self.copier.pump(float((self.count + 1) / self.fps))
            self.out.mux(self.vstream.encode(vf))
        except av.error.FFmpegError as e:
            raise MediaError(f"{self.path}: cannot write video ({ff_msg(e)})") from None
        except OSError as e:
            raise MediaError(f"{self.path}: cannot write ({e.strerror or e})") from None
        self.count += 1

    def close(self):
        import av

        if self.closed:
            return
        try:
            self.out.mux(self.vstream.encode(None))
            if self.copier is not None:
                self.copier.pump(None)   # the rest of the input's audio
                self.copier.close()
                self.copier = None
            self.out.close()
            self.out = None
            os.replace(self.tmp, self.path)
        except (av.error.FFmpegError, OSError) as e:
            self.abort()
            raise MediaError(f"{self.path}: cannot write video ({ff_msg(e)})") from None
        self.closed = True

    def abort(self):
        self.closed = True
        for c in (self.out, self.copier):
            try:
                if c is not None:
                    c.close()
            except Exception:
                pass
        self.out = self.copier = None
        try:
            self.tmp.unlink()
        except OSError:
            pass


def open_writer(path, width, height, fps, audio_from=None, crf=18) -> FrameWriter:
    """A :class:`VideoWriter` when ``path`` has a video extension, else an :class:`ImageFolderWriter`."""
    if is_video_path(path):
        return VideoWriter(path, width, height, fps, audio_from=audio_from, crf=crf)
    return ImageFolderWriter(path)
