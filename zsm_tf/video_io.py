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
            raise MediaError(f"{self.path}: corrupt video stream at frame {count} ({_ff_msg(e)})") from None
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

        ``progress``: optional callable(frames decoded so far). Never raises for damage: it is
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
                        if (frame.width, frame.height) != (self.info.width, self.info.height):
                            error = (f"{self.path}: frame size changes mid-stream at frame {len(pts)} "
                                     f"({frame.width}x{frame.height} after {self.info.width}x{self.info.height})")
                            break
                        pts.append(frame.pts)
                        if progress is not None and len(pts) % 64 == 0:
                            progress(len(pts))
                except av.error.FFmpegError as e:
                    error = f"{self.path}: corrupt video stream at frame {len(pts)} ({_ff_msg(e)})"
        except av.error.FFmpegError as e:
            raise MediaError(f"{self.path}: not a video FFmpeg can read ({_ff_msg(e)})") from None
        if error is None:
            error = self._early_end(len(pts))
        if first is None:
            rotation, colour = 0, None
        return StreamScan(count=len(pts), pts=pts, time_base=self.info.time_base, error=error,
                          rotation=rotation % 360, colour=colour)

    def close(self):
        self.container.close()


# FFmpeg colorspaces swscale converts with (BT.709, FCC, BT.470BG, SMPTE170M, SMPTE240M, BT.2020)
_SWS_COLORSPACES = {1, 4, 5, 6, 7, 9, 10}


def frame_colour(frame) -> Optional[dict]:
    """The colour tags of a decoded frame (FFmpeg enum ints; 2 = unspecified), None if untagged."""
    c = {k: int(getattr(frame, k, 2) or 2) for k in ("color_primaries", "color_trc", "colorspace")}
    c["color_range"] = int(getattr(frame, "color_range", 0) or 0)
    if all(v == 2 for k, v in c.items() if k != "color_range") and c["color_range"] == 0:
        return None
    return c


def to_rgb24(frame) -> np.ndarray:
    """A decoded frame as ``uint8 [H, W, 3]`` RGB, with its own matrix and range when tagged."""
    kw = {}
    if int(getattr(frame, "colorspace", 2) or 2) in _SWS_COLORSPACES:
        kw["src_colorspace"] = int(frame.colorspace)
    if int(getattr(frame, "color_range", 0) or 0) in (1, 2):
        kw["src_color_range"] = int(frame.color_range)
    try:
        return frame.to_ndarray(format="rgb24", **kw)
    except (TypeError, ValueError):   # a PyAV without these arguments: FFmpeg's defaults
        return frame.to_ndarray(format="rgb24")


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


def container_of(path) -> Optional[str]:
    """FFmpeg's format name for a video output path ("mp4", "matroska", "avi"...), else None."""
    return _FORMAT_OF_EXT.get(Path(str(path)).suffix.lower()) if is_video_path(path) else None


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


class StreamCopier:
    """Copies the audio and subtitle streams of ``src`` into the open output container ``out``.

    Packets are pulled from a second demuxer of the input as the output video advances
    (:meth:`pump`), so nothing is buffered. Audio is remuxed as it is when the container takes the
    codec, else re-encoded (AAC, or Opus for WebM); subtitles are remuxed when the container takes
    them, else dropped with a note. Each stream keeps its language and title; every timestamp is
    shifted by the input video's start time (the output video starts at 0). Notes for the user
    (what was re-encoded or dropped) collect in ``.notes``."""

    def __init__(self, out, src, fmt, subtitles=True):
        import av

        self.out, self.fmt, self.notes = out, fmt, []
        self._in = av.open(str(src))
        vin = self._in.streams.video[0] if self._in.streams.video else None
        v0 = (Fraction(vin.start_time) * vin.time_base
              if vin is not None and vin.start_time is not None and vin.time_base else Fraction(0))
        self._map = {}   # input stream index -> _Copy
        for ist in self._in.streams:
            if ist.type == "audio":
                self._map[ist.index] = self._audio(ist, v0)
            elif ist.type == "subtitle" and subtitles:
                try:
                    ost = out.add_stream_from_template(ist)
                except (ValueError, av.error.FFmpegError):
                    self.notes.append(f"subtitle stream {ist.index} ({ist.codec_context.name}) dropped: "
                                      f"the {fmt} container cannot hold it (use .mkv)")
                    continue
                _copy_tags(ist, ost)
                self._map[ist.index] = _Copy(ist, ost, v0, remux=True)
        self._packets = self._in.demux(*[self._in.streams[i] for i in self._map]) if self._map else iter(())
        self._pending = None
        self._done = not self._map

    def _audio(self, ist, v0):
        import av

        allowed = _REMUX_AUDIO[self.fmt]
        if allowed is None or ist.codec_context.name in allowed:
            ost = self.out.add_stream_from_template(ist)
            _copy_tags(ist, ost)
            return _Copy(ist, ost, v0, remux=True)
        codec = "libopus" if self.fmt == "webm" else "aac"
        rate = 48000 if codec == "libopus" else (ist.codec_context.sample_rate or 48000)
        ost = self.out.add_stream(codec, rate=rate)
        layout = ist.codec_context.layout.name if ist.codec_context.layout else "stereo"
        if layout not in ("mono", "stereo"):
            layout = "stereo"
        ost.layout = layout
        _copy_tags(ist, ost)
        cp = _Copy(ist, ost, v0, remux=False)
        fmt = ost.codec_context.format.name if ost.codec_context.format else "fltp"
        cp.resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        cp.rate, cp.samples, cp.skip = rate, 0, int(round(v0 * rate))
        return cp

    def pump(self, until_s: Optional[float]) -> None:
        """Muxes input packets up to ``until_s`` seconds of output time (all of them when None)."""
        import av

        while not self._done:
            if self._pending is None:
                try:
                    self._pending = next(self._packets)
                except StopIteration:
                    self._done = True
                    break
                except av.error.FFmpegError:
                    self._done = True   # damage in the audio: keep what we have
                    break
            pkt = self._pending
            cp = self._map.get(pkt.stream.index)
            if cp is None or (pkt.dts is None and pkt.pts is None):   # demux's flush packets
                self._pending = None
                continue
            t = float(((pkt.pts if pkt.pts is not None else pkt.dts) - cp.shift) * cp.ist.time_base)
            if until_s is not None and t > until_s:
                break
            self._pending = None
            cp.send(self.out, pkt)
        if self._done:
            self._finish()

    def _finish(self):
        for cp in self._map.values():
            cp.flush(self.out)

    def close(self):
        if self._in is not None:
            self._in.close()
            self._in = None


class _Copy:
    """One input stream copied (``remux``) or re-encoded into one output stream."""

    def __init__(self, ist, ost, v0, remux):
        self.ist, self.ost, self.remux, self.flushed = ist, ost, remux, False
        # containers without edit lists shift all streams to make negative times non-negative
        self.no_negative = ost.container.format.name not in ("mp4", "mov")
        self.shift = int(round(v0 / ist.time_base)) if ist.time_base else 0

    def send(self, out, pkt):
        import av

        if self.remux:
            if pkt.pts is not None:
                pkt.pts -= self.shift
            if pkt.dts is not None:
                pkt.dts -= self.shift
            if (self.no_negative and pkt.pts is not None and pkt.pts < 0
                    and pkt.pts + (pkt.duration or 0) <= 0):
                return   # e.g. AAC priming: the container would shift every stream to fit it
            pkt.stream = self.ost
            out.mux(pkt)
            return
        try:
            frames = pkt.decode()
        except av.error.FFmpegError:
            return
        for fr in frames:
            self._encode(out, fr)

    def _encode(self, out, frame):
        for fr in self.resampler.resample(frame):
            if self.skip > 0:           # input audio before the first video frame
                n = min(self.skip, fr.samples)
                self.skip -= n
                if n == fr.samples:
                    continue
                arr = fr.to_ndarray()[..., n:]
                fr2 = type(fr).from_ndarray(np.ascontiguousarray(arr), format=fr.format.name, layout=fr.layout.name)
                fr2.sample_rate = self.rate
                fr = fr2
            fr.pts = self.samples
            fr.time_base = Fraction(1, self.rate)
            self.samples += fr.samples
            out.mux(self.ost.encode(fr))

    def flush(self, out):
        if self.flushed:
            return
        self.flushed = True
        if not self.remux:
            self._encode(out, None)
            out.mux(self.ost.encode(None))


def _copy_tags(ist, ost) -> None:
    for key in ("language", "title", "handler_name"):
        v = ist.metadata.get(key)
        if v:
            ost.metadata[key] = v
    try:
        ost.disposition = ist.disposition
    except (AttributeError, TypeError, ValueError):
        pass


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


def rgb_to_video_frame(frame: np.ndarray, colour=None):
    """``uint8 [H, W, 3]`` RGB -> a ``yuv420p`` VideoFrame with ``colour``'s matrix and range."""
    import av

    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    kw = {}
    if colour and colour.get("colorspace") in _SWS_COLORSPACES:
        kw["dst_colorspace"] = colour["colorspace"]
    if colour and colour.get("color_range") in (1, 2):
        kw["dst_color_range"] = colour["color_range"]
    if kw:
        try:
            return vf.reformat(format="yuv420p", **kw)
        except (TypeError, ValueError):
            pass
    return vf


class VideoWriter(FrameWriter):
    """H.264 ``yuv420p`` (libx264; VP9 for ``.webm``) at ``fps``, audio (and subtitles) copied
    from ``audio_from`` with a :class:`StreamCopier`. Frame ``i`` is at ``i / fps``."""

    def __init__(self, path, width, height, fps, audio_from=None, crf=18, preset="medium"):
        import av

        self.path = Path(path)
        self.fmt = _FORMAT_OF_EXT[self.path.suffix.lower()]
        self.tmp = _temp_sibling(self.path, self.path.suffix)
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
            raise MediaError(f"{path}: cannot write video ({_ff_msg(e)})") from None
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
            if self.copier is not None:
                self.copier.pump(None)   # the rest of the input's audio
                self.copier.close()
                self.copier = None
            self.out.close()
            self.out = None
            os.replace(self.tmp, self.path)
        except (av.error.FFmpegError, OSError) as e:
            self.abort()
            raise MediaError(f"{self.path}: cannot write video ({_ff_msg(e)})") from None
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
