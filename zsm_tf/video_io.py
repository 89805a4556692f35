"""Reading and writing frames: videos through PyAV, image folders through Pillow.

Everything here streams: a source yields one ``uint8`` ``[H, W, 3]`` RGB frame at a time and a
writer takes one at a time, so memory does not grow with the length of a clip.

* :func:`open_source` opens a video file (anything FFmpeg demuxes and decodes) or a folder of
  images (sorted by name, natural order: ``2.png`` before ``10.png``). Image folders are checked up
  front (sizes, grayscale, 16-bit) so a bad folder fails before any work is done.
* :func:`open_writer` writes a video (H.264 ``yuv420p`` through libx264; VP9 for ``.webm``), with
  the input's audio track copied packet by packet (or re-encoded when the output container cannot
  hold the input's audio codec), or a folder of PNGs when the output path has no video extension.
  Writers work on a hidden temporary name in the output's directory and rename it at the end, so a
  failure leaves no partial output behind.

Problems the user can fix (missing file, not a video, corrupt stream, unwritable output...) raise
:class:`MediaError` with a one-line message.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm"}  # what a video output path ends with
# video files read as training data (``videos:DIR``): anything PyAV demuxes, by these names
VIDEO_INPUT_EXTS = VIDEO_EXTS | {".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp", ".ogv",
                                 ".y4m", ".gif"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".tga"}
DEFAULT_IMAGE_FPS = Fraction(25)

# Audio codecs each output container takes as they are (otherwise the audio is re-encoded).
_REMUX_AUDIO = {
    "mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    "mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le", "pcm_f32le"},
    "avi": {"mp3", "ac3", "aac", "pcm_s16le", "pcm_u8"},
    "webm": {"opus", "vorbis"},
    "matroska": None,  # takes anything
}
_FORMAT_OF_EXT = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska",
                  ".avi": "avi", ".webm": "webm"}


class MediaError(Exception):
    """A problem with the user's input or output; the message is one line, meant to be shown."""


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


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _is_16bit(im) -> bool:
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return True
    for tile in getattr(im, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else "")
        if ";16" in rawmode:   # e.g. PNG 48-bit RGB: Pillow opens it as "RGB" and drops 8 bits
            return True
    return False


def check_image(path, im) -> None:
    """Rejects images the model cannot take without a silent, lossy guess."""
    if _is_16bit(im):
        raise MediaError(f"{path}: 16-bit image (mode {im.mode}); convert the frames to 8-bit RGB first")
    if im.mode in ("1", "L", "LA", "La"):
        raise MediaError(f"{path}: grayscale image (mode {im.mode}); convert the frames to RGB first")
    if im.mode == "P" and im.palette is not None and im.palette.mode in ("L", "LA"):
        raise MediaError(f"{path}: grayscale (palette) image; convert the frames to RGB first")


def to_rgb_array(im) -> np.ndarray:
    if im.mode != "RGB":
        im = im.convert("RGB")   # palette, RGBA (alpha dropped), CMYK, YCbCr
    return np.asarray(im, dtype=np.uint8)


def read_image(path) -> np.ndarray:
    """One image file as ``uint8 [H, W, 3]`` RGB, or :class:`MediaError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            check_image(path, im)
            return to_rgb_array(im)
    except FileNotFoundError:
        raise MediaError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise MediaError(f"{path}: not an image Pillow can read") from None
    except OSError as e:
        raise MediaError(f"{path}: cannot read image ({e})") from None


def list_images(folder) -> list:
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS
             and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.name))


class FrameSource:
    """Iterable of ``uint8 [H, W, 3]`` RGB frames with an :class:`SourceInfo` in ``.info``."""

    info: SourceInfo

    def __iter__(self) -> Iterator[np.ndarray]:
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

    def __iter__(self):
        for p in self.files:
            yield read_image(p)


class VideoSource(FrameSource):
    def __init__(self, path, fps=None):
        import av

        self.path = str(path)
        try:
            self.container = av.open(self.path)
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: not a video FFmpeg can read ({_ff_msg(e)})") from None
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
                               audio_codec=audio[0].codec_context.name if audio else None)
        self._exact = bool(self.stream.frames)

    def __iter__(self):
        import av

        count = 0
        try:
            for frame in self.container.decode(self.stream):
                arr = frame.to_ndarray(format="rgb24")
                if arr.shape[:2] != (self.info.height, self.info.width):
                    raise MediaError(f"{self.path}: frame size changes mid-stream at frame {count} "
                                     f"({arr.shape[1]}x{arr.shape[0]} after {self.info.width}x{self.info.height})")
                count += 1
                yield arr
        except av.error.FFmpegError as e:
            raise MediaError(f"{self.path}: corrupt video stream after {count} frames ({_ff_msg(e)})") from None
        expected = self.info.num_frames
        if expected:
            # mp4/mov give an exact count; otherwise it comes from the container's duration
            short = expected - max(2, expected // 50) if self._exact else int(0.9 * expected) - 2
            if count < short:
                raise MediaError(f"{self.path}: video stream ends early: decoded {count} of "
                                 f"{'' if self._exact else '~'}{expected} frames (truncated or corrupt file)")

    def close(self):
        self.container.close()


def _ff_msg(e) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).splitlines()[0] if msg else type(e).__name__


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


def is_video_path(path) -> bool:
    s = str(path)
    return not s.endswith(("/", os.sep)) and Path(s).suffix.lower() in VIDEO_EXTS


def check_output_path(path, input_path=None) -> None:
    """Fails early (before any work) when ``path`` cannot be written."""
    p = Path(path)
    if input_path is not None and p.exists() and p.resolve() == Path(input_path).resolve():
        raise MediaError(f"{path}: output is the input")
    parent = p.resolve().parent if not str(path).endswith(("/", os.sep)) else p.resolve().parent
    if is_video_path(path):
        if p.is_dir():
            raise MediaError(f"{path}: is a folder; give a video file name")
    elif p.exists() and not p.is_dir():
        raise MediaError(f"{path}: exists and is not a folder (use a video extension: "
                         f"{', '.join(sorted(VIDEO_EXTS))}, or a folder name for PNG frames)")
    if not parent.is_dir():
        raise MediaError(f"{path}: cannot write: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MediaError(f"{path}: cannot write: permission denied in {parent}")
    if p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
        raise MediaError(f"{path}: cannot write: permission denied")


def _temp_sibling(path: Path, suffix="") -> Path:
    return path.parent / f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


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
        self.tmp = _temp_sibling(self.path)
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


class VideoWriter(FrameWriter):
    """H.264 ``yuv420p`` (libx264; VP9 for ``.webm``) at ``fps``, audio copied from ``audio_from``.

    Audio packets are pulled from a second demuxer of the input as the video advances, so nothing
    is buffered; they are remuxed as they are when the container takes the codec, else re-encoded
    (AAC, or Opus for WebM)."""

    def __init__(self, path, width, height, fps, audio_from=None, crf=18, preset="medium"):
        import av

        self.path = Path(path)
        self.fmt = _FORMAT_OF_EXT[self.path.suffix.lower()]
        self.tmp = _temp_sibling(self.path, self.path.suffix)
        self.fps = Fraction(fps)
        self.count = 0
        self.closed = False
        self.out = None
        self._ain = None
        try:
            self.out = av.open(str(self.tmp), "w", format=self.fmt)
            if self.fmt == "webm":
                self.vstream = self.out.add_stream("libvpx-vp9", rate=self.fps)
                self.vstream.options = {"crf": str(int(crf) + 13), "b": "0", "row-mt": "1"}
            else:
                self.vstream = self.out.add_stream("libx264", rate=self.fps)
                self.vstream.options = {"crf": str(crf), "preset": preset}
            self.vstream.width, self.vstream.height = int(width), int(height)
            self.vstream.pix_fmt = "yuv420p"
            if audio_from is not None:
                self._open_audio(audio_from)
        except av.error.FFmpegError as e:
            self.abort()
            raise MediaError(f"{path}: cannot write video ({_ff_msg(e)})") from None
        except OSError as e:
            self.abort()
            raise MediaError(f"{path}: cannot write ({e.strerror or e})") from None

    # -- audio
    def _open_audio(self, src):
        import av

        self._ain = av.open(str(src))
        if not self._ain.streams.audio:
            self._ain.close()
            self._ain = None
            return
        ain = self._ain.streams.audio[0]
        vin = self._ain.streams.video[0] if self._ain.streams.video else None
        # the output video starts at 0: shift the audio by the input video's start time
        v0 = float(vin.start_time * vin.time_base) if vin is not None and vin.start_time is not None else 0.0
        self._a_in = ain
        allowed = _REMUX_AUDIO[self.fmt]
        self.remux = allowed is None or ain.codec_context.name in allowed
        self._a_shift = int(round(v0 / ain.time_base)) if ain.time_base else 0
        if self.remux:
            self.astream = self.out.add_stream_from_template(ain)
            self._apackets = self._ain.demux(ain)
        else:
            codec = "libopus" if self.fmt == "webm" else "aac"
            rate = ain.codec_context.sample_rate or 48000
            if codec == "libopus":
                rate = 48000
            self.astream = self.out.add_stream(codec, rate=rate)
            layout = ain.codec_context.layout.name if ain.codec_context.layout else "stereo"
            if layout not in ("mono", "stereo"):
                layout = "stereo"
            self.astream.layout = layout
            self._resampler = av.AudioResampler(format=self.astream.codec_context.format.name
                                                if self.astream.codec_context.format else "fltp",
                                                layout=layout, rate=rate)
            self._a_rate = rate
            self._a_samples = 0
            self._a_skip = int(round(v0 * rate))
            self._apackets = self._ain.demux(ain)
        self._a_done = False

    def _pump_audio(self, until_s: Optional[float]):
        """Muxes input audio up to ``until_s`` seconds of output time (all of it when None)."""
        import av

        if self._ain is None or self._a_done:
            return
        tb = self._a_in.time_base
        while True:
            if self._a_pending is None:
                try:
                    self._a_pending = next(self._apackets)
                except StopIteration:
                    self._a_done = True
                    break
                except av.error.FFmpegError:
                    self._a_done = True   # audio damage: keep what we have
                    break
            pkt = self._a_pending
            if pkt.dts is None and pkt.pts is None:   # demux's flush packet
                self._a_pending = None
                continue
            t = float(((pkt.pts if pkt.pts is not None else pkt.dts) - self._a_shift) * tb)
            if until_s is not None and t > until_s:
                break
            self._a_pending = None
            if self.remux:
                if pkt.pts is not None:
                    pkt.pts -= self._a_shift
                if pkt.dts is not None:
                    pkt.dts -= self._a_shift
                pkt.stream = self.astream
                self.out.mux(pkt)
            else:
                try:
                    frames = pkt.decode()
                except av.error.FFmpegError:
                    continue
                for fr in frames:
                    self._encode_audio(fr)
        if self._a_done and not self.remux:
            self._encode_audio(None)
            self.out.mux(self.astream.encode(None))

    def _encode_audio(self, frame):
        for fr in self._resampler.resample(frame):
            if self._a_skip > 0:           # input audio before the first video frame
                n = min(self._a_skip, fr.samples)
                self._a_skip -= n
                if n == fr.samples:
                    continue
                arr = fr.to_ndarray()[..., n:]
                layout = fr.layout.name
                fr = type(fr).from_ndarray(np.ascontiguousarray(arr), format=fr.format.name, layout=layout)
                fr.sample_rate = self._a_rate
            fr.pts = self._a_samples
            fr.time_base = Fraction(1, self._a_rate)
            self._a_samples += fr.samples
            self.out.mux(self.astream.encode(fr))

    _a_pending = None

    # -- video
    def write(self, frame):
        import av

        try:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self.count
            vf.time_base = 1 / self.fps
            self._pump_audio((self.count + 1) / self.fps)
            self.out.mux(self.vstream.encode(vf))
        except av.error.FFmpegError as e:
            raise MediaError(f"{self.path}: cannot write video ({_ff_msg(e)})") from None
        except OSError as e:
            raise MediaError(f"{self.path}: cannot write ({e.strerror or e})") from None
        self.count += 1

    def close(self):
        import av

        if self.closed:
            return
        try:
            self.out.mux(self.vstream.encode(None))
            self._pump_audio(None)   # the rest of the input's audio
            self.out.close()
            self.out = None
            if self._ain is not None:
                self._ain.close()
                self._ain = None
            os.replace(self.tmp, self.path)
        except (av.error.FFmpegError, OSError) as e:
            self.abort()
            raise MediaError(f"{self.path}: cannot write video ({_ff_msg(e)})") from None
        self.closed = True

    def abort(self):
        self.closed = True
        for c in (self.out, self._ain):
            try:
                if c is not None:
                    c.close()
            except Exception:
                pass
        self.out = self._ain = None
        try:
            self.tmp.unlink()
        except OSError:
            pass


def open_writer(path, width, height, fps, audio_from=None, crf=18) -> FrameWriter:
    """A :class:`VideoWriter` when ``path`` has a video extension, else an :class:`ImageFolderWriter`."""
    if is_video_path(path):
        return VideoWriter(path, width, height, fps, audio_from=audio_from, crf=crf)
    return ImageFolderWriter(path)
