"""Output in committed parts: encoded video segments joined by stream copy, or PNG frames.

A long upscale writes its output as segments of consecutive output frames, each one finished
(encoded, flushed, fsync'ed and renamed) before the next starts, so an interrupted run loses at
most the segment in progress (see :mod:`zsm_tf.pipeline.resume`).

* :class:`SegmentEncoder` encodes one segment to an MP4 file (H.264, or VP9 for WebM output) with
  timestamps starting at 0, in the output's time base.
* :func:`join_segments` stream-copies the segments' packets (shifted to their place in time) into
  the final container with the input's audio and subtitles (:class:`zsm_tf.io.audio.StreamCopier`)
  and its rotation. Decoding the joined file gives exactly the frames each segment decodes to.
* :func:`zsm_tf.io.images.write_png` writes one PNG frame atomically.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from zsm_tf.io.audio import StreamCopier
from zsm_tf.io.colour import rgb_to_video_frame
from zsm_tf.io.formats import MediaError, ff_msg
from zsm_tf.io.writers import add_video_stream

SEGMENT_EXT = ".mp4"


def segment_format(out_format: str) -> str:
    """The container segments are written in: MP4 (exact time bases, H.264 or VP9), except for
    AVI output, whose muxer only takes AVI's own H.264 packets."""
    return "avi" if out_format == "avi" else "mp4"


def fsync_file(path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SegmentEncoder:
    """Encodes frames into ``path`` (MP4, or AVI for AVI output; written as ``path.part`` until
    :meth:`finish`).

    Args:
      path: the finished segment's file name.
      out_format: the final container ("mp4", "matroska", "webm"...): VP9 for "webm", else H.264.
      width, height: frame size (output pixels).
      rate: nominal frame rate (for the encoder's rate control).
      time_base: of the timestamps given to :meth:`write`.
      crf: quality; colour: tags and matrix (:class:`zsm_tf.io.StreamScan`.colour).
    """

    def __init__(self, path, out_format, width, height, rate, time_base, crf=18, colour=None):
        import av

        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        self.time_base = Fraction(time_base)
        self.colour = colour
        self.count = 0
        try:
            self.out = av.open(str(self.part), "w", format=segment_format(out_format))
            self.vs = add_video_stream(self.out, out_format, width, height, Fraction(rate),
                                       time_base=self.time_base, crf=crf, colour=colour)
        except av.error.FFmpegError as e:
            raise MediaError(f"{self.path}: cannot write video ({ff_msg(e)})") from None

    def write(self, frame: np.ndarray, pts: int) -> None:
        """``frame``: uint8 ``[H, W, 3]`` RGB; ``pts``: its time in ``time_base`` units from the
        segment's start."""
        import av

        vf = rgb_to_video_frame(frame, self.colour)
        vf.pts = int(pts)
        vf.time_base = self.time_base
        try:
            self.out.mux(self.vs.encode(vf))
        except av.error.FFmpegError as e:
            raise MediaError(f"{self.path}: cannot write video ({ff_msg(e)})") from None
        self.count += 1

    def finish(self) -> int:
        """Flushes, fsyncs and renames the segment to its final name; returns its size in bytes."""
        self.out.mux(self.vs.encode(None))
        self.out.close()
        self.out = None
        fsync_file(self.part)
        os.replace(self.part, self.path)
        fsync_dir(self.path.parent)
        return self.path.stat().st_size

    def abort(self) -> None:
        if self.out is not None:
            try:
                self.out.close()
            except Exception:
                pass
            self.out = None
        try:
            self.part.unlink()
        except OSError:
            pass


def join_segments(segments: Sequence[tuple], dest, out_format: str, rotation: int = 0,
                  streams_from=None, last_frame_s=None) -> list:
    """Stream-copies ``segments`` (``(path, start_seconds)`` pairs, in order) into ``dest``.

    ``streams_from``: a file whose audio and subtitle streams are copied alongside (None: none);
    ``rotation``: degrees for the display matrix (0: none); ``last_frame_s``: how long the last
    frame shows (e.g. a whole input frame, so that the video ends with its audio; None: one
    output frame). Returns notes for the user."""
    import av

    ins, notes = [], []
    out = None
    try:
        out = av.open(str(dest), "w", format=out_format)
        ins = [av.open(str(p)) for p, _ in segments]
        template = ins[0].streams.video[0]
        vs = out.add_stream_from_template(template)
        if rotation:
            vs.set_display_rotation(rotation)
        copier = StreamCopier(out, streams_from, out_format) if streams_from is not None else None
        notes += copier.notes if copier else []
        for i, (c, (_, start)) in enumerate(zip(ins, segments)):
            st = c.streams.video[0]
            shift = int(round(Fraction(start) / st.time_base))
            packets = (p for p in c.demux(st) if p.dts is not None or p.pts is not None)
            if i == len(ins) - 1 and last_frame_s is not None:
                packets = _last_frame_lasting(list(packets), int(round(Fraction(last_frame_s) / st.time_base)))
            for pkt in packets:
                if pkt.pts is not None:
                    pkt.pts += shift
                if pkt.dts is not None:
                    pkt.dts += shift
                if copier is not None and pkt.pts is not None:
                    copier.pump(float(pkt.pts * st.time_base))
                pkt.stream = vs
                out.mux(pkt)
        if copier is not None:
            copier.pump(None)
            copier.close()
        out.close()
        out = None
    except av.error.FFmpegError as e:
        raise MediaError(f"{dest}: cannot write video ({ff_msg(e)})") from None
    finally:
        for c in ins:
            c.close()
        if out is not None:
            try:
                out.close()
            except Exception:
                pass
    return notes


def _last_frame_lasting(packets: list, ticks: int) -> list:
    """The packets of the last segment with the last frame shown for ``ticks`` (the frame shown
    last, and the packet last in decoding order, which is what MP4 counts its duration from)."""
    if not packets or ticks <= 0:
        return packets
    shown_last = max(packets, key=lambda p: p.pts if p.pts is not None else p.dts)
    for p in {id(shown_last): shown_last, id(packets[-1]): packets[-1]}.values():
        p.duration = max(int(p.duration or 0), ticks)
    return packets
