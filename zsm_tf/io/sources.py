"""Frame sources: a video file (PyAV) or a folder of images, read one ``uint8 [H, W, 3]`` RGB
frame at a time, so memory does not grow with the clip. :func:`open_source` picks the kind;
image folders are checked up front (sizes, grayscale, 16-bit) so a bad folder fails before work."""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from zsm_tf.errors import one_line
from zsm_tf.io.colour import frame_colour, to_rgb24
from zsm_tf.io.formats import DEFAULT_IMAGE_FPS, IMAGE_EXTS, MediaError, ff_msg
from zsm_tf.io.images import check_image, has_alpha, list_images, read_image


@dataclass
class SourceInfo:
    path: str
    kind: str                    # "video" or "images"
    width: int
    height: int
    fps: Fraction                # frames per second (DEFAULT_IMAGE_FPS or --fps for image folders)
    num_frames: Optional[int]    # exact for folders, header count or estimate for videos, None if unknown
    has_audio: bool = False
    audio_codec: Optional[str] = None
    time_base: Optional[Fraction] = None   # of the video stream's timestamps (videos only)


@dataclass
class StreamScan:
    """What a full decode of a video stream found (:meth:`VideoSource.scan`), before any work.

    ``pts[i]`` is frame ``i``'s presentation time in ``time_base`` units (None if the frame has
    none); ``error`` says why decoding stopped early (corrupt or truncated stream) after
    ``count`` good frames, else None; ``rotation`` (degrees, counter-clockwise as FFmpeg's
    display matrix) and ``colour`` (primaries, trc, colorspace, range: FFmpeg's enum values)
    come from the first frame."""
    count: int
    pts: list
    time_base: Fraction
    error: Optional[str] = None
    rotation: int = 0
    colour: Optional[dict] = None
    alpha: bool = False     # the frames have an alpha channel (the model takes RGB: dropped)


class FrameSource:
    """Iterable of ``uint8 [H, W, 3]`` RGB frames with an :class:`SourceInfo` in ``.info``."""

    info: SourceInfo

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.frames()

    def frames(self, start: int = 0, stop: Optional[int] = None) -> Iterator[np.ndarray]:
        """Frames ``start`` (earlier ones are skipped, not converted) up to ``stop`` (exclusive)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ImageFolderSource(FrameSource):
    def __init__(self, folder, fps=None):
        from PIL import Image, UnidentifiedImageError

        self.files = list_images(folder)
        if not self.files:
            raise MediaError(f"{folder}: folder holds no images ({', '.join(sorted(IMAGE_EXTS))})")
        size = None
        for p in self.files:   # headers only: cheap, and a bad folder fails before any work
            try:
                with Image.open(p) as im:
                    check_image(p, im)
                    if size is None:
                        size, first = im.size, p
                    elif im.size != size:
                        raise MediaError(f"{p.name} is {im.size[0]}x{im.size[1]} but {first.name} is "
                                         f"{size[0]}x{size[1]}: all frames in the folder must be the same size")
            except UnidentifiedImageError:
                raise MediaError(f"{p}: not an image Pillow can read") from None
            except OSError as e:
                raise MediaError(f"{p}: cannot read image ({e})") from None
        self.info = SourceInfo(path=str(folder), kind="images", width=size[0], height=size[1],
                               fps=Fraction(fps) if fps else DEFAULT_IMAGE_FPS,
                               num_frames=len(self.files))

    def frames(self, start=0, stop=None):
        for p in self.files[start:stop]:
            yield read_image(p)

    def scan(self, progress=None) -> StreamScan:
        """Decodes every image once, before any work, stopping at the first damaged one (e.g. a
        truncated PNG): the same facts as :meth:`VideoSource.scan` (no timestamps)."""
        from PIL import Image

        count, error, alpha = 0, None, False
        for p in self.files:
            try:
                with Image.open(p) as im:
                    alpha = alpha or has_alpha(im)
                    im.load()
            except (OSError, SyntaxError, ValueError) as e:
                error = f"{p}: damaged image, frame {count} of the folder ({one_line(e)})"
                break
            count += 1
            if progress is not None and count % 16 == 0:
                progress.advance(16)
        return StreamScan(count=count, pts=None, time_base=None, error=error, alpha=alpha)


class VideoSource(FrameSource):
    def __init__(self, path, fps=None):
        import av

        self.path = str(path)
        try:
            self.container = av.open(self.path)
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: not a video FFmpeg can read ({ff_msg(e)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise MediaError(f"{path}: has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        cc = self.stream.codec_context
        rate = fps or self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        rate = Fraction(rate) if rate else DEFAULT_IMAGE_FPS
        if self.stream.frames:
            n = int(self.stream.frames)
        elif self.container.duration:
            n = int(round(self.container.duration / 1e6 * rate))
        else:
            n = None
        audio = self.container.streams.audio
        self.info = SourceInfo(path=self.path, kind="video", width=cc.width, height=cc.height, fps=rate,
                               num_frames=n or None, has_audio=bool(audio),
                               audio_codec=audio[0].codec_context.name if audio else None,
                               time_base=Fraction(self.stream.time_base) if self.stream.time_base else None)
        self._exact = bool(self.stream.frames)

    def frames(self, start=0, stop=None):
        import av

        count = 0
        try:
            for frame in self.container.decode(self.stream):
                if stop is not None and count >= stop:
                    return
                if count < start:
                    count += 1
                    continue
                arr = to_rgb24(frame)
                if arr.shape[:2] != (self.info.height, self.info.width):
                    raise MediaError(f"{self.path}: frame size changes mid-stream at frame {count} "
                                     f"({arr.shape[1]}x{arr.shape[0]} after {self.info.width}x{self.info.height})")
                count += 1
                yield arr
                if stop is not None and count >= stop:   # before decoding (maybe damage) further
                    return
        except av.error.FFmpegError as e:
            raise MediaError(f"{self.path}: corrupt video stream at frame {count} ({ff_msg(e)})") from None
        if stop is None:
            short = self._early_end(count)
            if short:
                raise MediaError(short)

    def _early_end(self, count) -> Optional[str]:
        """The message for a stream that decoded ``count`` frames, far fewer than its header says."""
        expected = self.info.num_frames
        if expected:
            # mp4/mov give an exact count; otherwise it comes from the container's duration
            short = expected - max(2, expected // 50) if self._exact else int(0.9 * expected) - 2
            if count < short:
                return (f"{self.path}: video stream ends early at frame {count} of "
                        f"{'' if self._exact else '~'}{expected} (truncated or corrupt file)")
        return None

    def scan(self, progress=None) -> StreamScan:
        """Decodes the whole stream once (no pixel conversion) for its exact frame count, every
        frame's timestamp, its orientation and colour tags, and where it is damaged, if anywhere.

        ``progress``: an optional :class:`zsm_tf.progress.Progress`, advanced in frames decoded
        (every 64; an image folder's: every 16). Never raises for damage: it is
        reported in ``.error`` (with the first bad frame's index) for the caller to decide."""
        import av

        pts, error, first = [], None, None
        try:
            with av.open(self.path) as c:
                st = c.streams.video[0]
                st.thread_type = "AUTO"
                try:
                    for frame in c.decode(st):
                        if first is None:
                            first = frame
                            rotation = int(round(getattr(frame, "rotation", 0) or 0))
                            colour = frame_colour(frame)
                            fmt = frame.format
                            alpha = len(fmt.components) == 4 or fmt.name.startswith("ya")
                        if (frame.width, frame.height) != (self.info.width, self.info.height):
                            error = (f"{self.path}: frame size changes mid-stream at frame {len(pts)} "
                                     f"({frame.width}x{frame.height} after {self.info.width}x{self.info.height})")
                            break
                        pts.append(frame.pts)
                        if progress is not None and len(pts) % 64 == 0:
                            progress.advance(64)
                except av.error.FFmpegError as e:
                    error = f"{self.path}: corrupt video stream at frame {len(pts)} ({ff_msg(e)})"
        except av.error.FFmpegError as e:
            raise MediaError(f"{self.path}: not a video FFmpeg can read ({ff_msg(e)})") from None
        if error is None:
            error = self._early_end(len(pts))
        if first is None:
            rotation, colour, alpha = 0, None, False
        return StreamScan(count=len(pts), pts=pts, time_base=self.info.time_base, error=error,
                          rotation=rotation % 360, colour=colour, alpha=alpha)

    def close(self):
        self.container.close()


def open_source(path, fps=None) -> FrameSource:
    """A video file or a folder of images, as a :class:`FrameSource`.

    ``fps`` overrides the frame rate (the only source of it for image folders: default 25)."""
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{path}: no such file or folder")
    if p.is_dir():
        return ImageFolderSource(p, fps)
    if p.suffix.lower() in IMAGE_EXTS:
        raise MediaError(f"{path}: is a single image; pass a folder of frames (or a video)")
    if not os.access(p, os.R_OK):
        raise MediaError(f"{path}: permission denied")
    return VideoSource(p, fps)


# --------------------------------------------------------------------------------------- writing
