"""Audio and subtitle streams of an input copied into an output container: remuxed packet by
packet when the container takes the codec, else re-encoded (AAC, or Opus for WebM)."""
from __future__ import annotations

from fractions import Fraction
from typing import Optional

import numpy as np

# Audio codecs each output container takes as they are (otherwise the audio is re-encoded).
REMUX_AUDIO = {
    "mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    "mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le", "pcm_f32le"},
    "avi": {"mp3", "ac3", "aac", "pcm_s16le", "pcm_u8"},
    "webm": {"opus", "vorbis"},
    "matroska": None,  # takes anything
}

# What each container stores of a stream's tags (language, title).
KEEPS_TITLE = {"matroska", "webm", "avi"}
KEEPS_LANGUAGE = {"mp4", "mov", "matroska", "webm"}


def audio_reencode(codec: Optional[str], fmt: str) -> Optional[str]:
    """The codec an audio stream ``codec`` is re-encoded to in container ``fmt`` ("AAC" or
    "Opus"), or None when it is copied as it is."""
    allowed = REMUX_AUDIO.get(fmt)
    if codec is None or allowed is None or codec in allowed:
        return None
    return "Opus" if fmt == "webm" else "AAC"


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
                self.notes += _copy_tags(ist, ost, fmt)
                self._map[ist.index] = _Copy(ist, ost, v0, remux=True)
        self._packets = self._in.demux(*[self._in.streams[i] for i in self._map]) if self._map else iter(())
        self._pending = None
        self._done = not self._map

    def _audio(self, ist, v0):
        import av

        to = audio_reencode(ist.codec_context.name, self.fmt)
        if to is None:
            ost = self.out.add_stream_from_template(ist)
            self.notes += _copy_tags(ist, ost, self.fmt)
            return _Copy(ist, ost, v0, remux=True)
        self.notes.append(f"audio stream {ist.index} ({ist.codec_context.name}) re-encoded to {to}: "
                          f"the {self.fmt} container cannot hold it as it is (.mkv keeps it)")
        codec = "libopus" if self.fmt == "webm" else "aac"
        rate = 48000 if codec == "libopus" else (ist.codec_context.sample_rate or 48000)
        ost = self.out.add_stream(codec, rate=rate)
        layout = ist.codec_context.layout.name if ist.codec_context.layout else "stereo"
        if layout not in ("mono", "stereo"):
            layout = "stereo"
        ost.layout = layout
        self.notes += _copy_tags(ist, ost, self.fmt)
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


def _copy_tags(ist, ost, fmt) -> list:
    """Copies the stream's language, title and handler name; returns notes on what ``fmt``
    cannot store."""
    notes = []
    for key in ("language", "title", "handler_name"):
        v = ist.metadata.get(key)
        if v:
            ost.metadata[key] = v
    what = f"{ist.type} stream {ist.index}"
    title, lang = ist.metadata.get("title"), ist.metadata.get("language")
    if title and fmt not in KEEPS_TITLE:
        notes.append(f"{what}: its title {title!r} is not kept (the {fmt} container has no track "
                     f"titles; .mkv keeps them)")
    if lang and lang != "und" and fmt not in KEEPS_LANGUAGE:
        notes.append(f"{what}: its language {lang!r} is not kept (the {fmt} container has no track "
                     f"languages; .mkv keeps them)")
    try:
        ost.disposition = ist.disposition
    except (AttributeError, TypeError, ValueError):
        pass
    return notes
