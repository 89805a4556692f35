"""``zsm-tf upscale`` keeps the video's timing and metadata: each output frame at its input frame's
time and each new frame midway (variable frame rate stays in sync), exact rational rates,
rotation, colour tags, and the audio/subtitle streams with their languages."""
from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest
from test_upscale import fake_model

from zsm_tf.commands import upscale
from zsm_tf.pipeline.timing import is_constant_rate, output_timing


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)


def write_clip(path, pts_ms=None, n=8, rate=None, rotation=None, colour=None, audio_lang=None,
               w=24, h=16):
    """H.264 clip with frames at ``pts_ms`` (time base 1/1000) or at ``rate``; optional display
    rotation, colour tags and an AAC track tagged with ``audio_lang``."""
    c = av.open(str(path), "w")
    v = c.add_stream("libx264", rate=rate or 30)
    v.width, v.height, v.pix_fmt = w, h, "yuv420p"
    tb = Fraction(1, 1000) if pts_ms is not None else 1 / Fraction(rate)
    v.codec_context.time_base = tb
    if rotation:
        v.set_display_rotation(rotation)
    if colour:
        for k, val in colour.items():
            setattr(v.codec_context, k, val)
    a = None
    if audio_lang:
        a = c.add_stream("aac", rate=44100)
        a.layout = "mono"
        a.metadata["language"] = audio_lang
    times = pts_ms if pts_ms is not None else list(range(n))
    for i, p in enumerate(times):
        img = np.full((h, w, 3), (i * 20) % 256, np.uint8)
        img[:, i % w] = 255
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        if colour and "colorspace" in colour:
            f = f.reformat(format="yuv420p", dst_colorspace=colour["colorspace"])
        f.pts, f.time_base = p, tb
        c.mux(v.encode(f))
    c.mux(v.encode(None))
    if a is not None:
        dur = float(times[-1] * tb) + 0.1
        s = (np.sin(np.arange(int(44100 * dur)) / 10) * 0.3).astype(np.float32)[None]
        for i in range(0, s.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(s[:, i:i + 1024]), format="fltp", layout="mono")
            af.sample_rate, af.pts = 44100, i
            c.mux(a.encode(af))
        c.mux(a.encode(None))
    c.close()
    return path


def frames_of(path):
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        frames = list(c.decode(st))
        return st, frames, [Fraction(f.pts) * st.time_base for f in frames]


def run(argv, capsys):
    rc = upscale.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def test_output_timing_units():
    t, note = output_timing(Fraction(24000, 1001), "double", [1001 * i for i in range(5)], Fraction(1, 24000))
    assert t.cfr and note is None and t.rate == Fraction(48000, 1001) and t.seconds(3) == Fraction(3003, 48000)
    t, note = output_timing(Fraction(20), "double", [0, 40, 120, 130], Fraction(1, 1000))
    assert not t.cfr and "variable frame rate" in note
    assert [t.seconds(g) for g in range(7)] == [Fraction(x, 1000) for x in (0, 20, 40, 80, 120, 125, 130)]
    t, _ = output_timing(Fraction(20), "slowmo", [0, 40, 120, 130], Fraction(1, 1000))
    assert [t.seconds(g) for g in range(7)] == [Fraction(x, 1000) for x in (0, 40, 80, 160, 240, 250, 260)]
    assert is_constant_rate([0, 42, 83, 125, 167], Fraction(1, 1000), Fraction(24000, 1001))  # mkv ms rounding
    t, note = output_timing(Fraction(25), "double", [0, 40, 40, 80], Fraction(1, 1000))
    assert t.cfr and "out of order" in note


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_variable_frame_rate_keeps_input_times(tmp_path, fake, capsys, ext):
    pts = [0, 33, 67, 150, 183, 300, 317, 333, 450, 500, 533]          # 3 to 60 fps
    clip = write_clip(tmp_path / "vfr.mp4", pts_ms=pts, audio_lang="fra")
    out = tmp_path / f"out{ext}"
    rc, err = run([clip, out, "--window", "4"], capsys)
    assert rc == 0 and "variable frame rate" in err, err
    _, frames, times = frames_of(out)
    assert len(frames) == 2 * len(pts) - 1
    want = [Fraction(pts[g // 2], 1000) if g % 2 == 0 else Fraction(pts[g // 2] + pts[g // 2 + 1], 2000)
            for g in range(len(frames))]
    err_ms = max(abs(float(a - b)) * 1000 for a, b in zip(times, want))
    assert err_ms <= (0.5 if ext == ".mkv" else 1e-6), err_ms     # matroska counts milliseconds
    with av.open(str(out)) as c:
        assert [s.metadata.get("language") for s in c.streams.audio] == ["fra"]


def test_constant_rate_keeps_exact_rational_rate(tmp_path, fake, capsys):
    clip = write_clip(tmp_path / "ntsc.mp4", n=9, rate=Fraction(24000, 1001))
    out = tmp_path / "out.mp4"
    rc, err = run([clip, out, "-q"], capsys)
    assert rc == 0, err
    st, frames, times = frames_of(out)
    assert st.base_rate == Fraction(48000, 1001)
    assert times == [Fraction(1001 * g, 48000) for g in range(17)]
    # the last frame shows for a whole input frame, so the video lasts as long as the input's 9
    # frames (and its audio): 17 frames over 18 ticks on average
    assert st.duration * st.time_base == Fraction(9 * 1001, 24000)
    assert st.average_rate == Fraction(48000, 1001) * 17 / 18
    out2 = tmp_path / "slow.mp4"
    rc, err = run([clip, out2, "-q", "--fps-mode", "slowmo"], capsys)
    st, _, times = frames_of(out2)
    assert rc == 0 and st.base_rate == Fraction(24000, 1001) and times[-1] == Fraction(16 * 1001, 24000)
    assert st.duration * st.time_base == Fraction(18 * 1001, 24000)   # twice the input's


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".mov"])
def test_rotation_and_colour_tags_kept(tmp_path, fake, capsys, ext):
    colour = {"color_primaries": 1, "color_trc": 1, "colorspace": 1}      # BT.709
    clip = write_clip(tmp_path / "phone.mp4", n=5, rate=30, rotation=90, colour=colour, w=16, h=24)
    with av.open(str(clip)) as c:
        f = next(c.decode(video=0))
        assert f.rotation == 90 and f.colorspace == 1
    out = tmp_path / f"out{ext}"
    rc, err = run([clip, out, "-q"], capsys)
    assert rc == 0, err
    _, frames, _ = frames_of(out)
    f = frames[0]
    assert f.rotation == 90
    assert (f.color_primaries, f.color_trc, f.colorspace) == (1, 1, 1)
    assert (f.width, f.height) == (64, 96)                 # stored pixels unrotated, as the input's


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")
def test_subtitles_and_languages_kept(tmp_path, fake, capsys):
    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,200\nhello\n\n2\n00:00:00,200 --> 00:00:00,300\nworld\n")
    base = write_clip(tmp_path / "v.mp4", n=10, rate=30, audio_lang="fra")
    clip = tmp_path / "in.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(base), "-i", str(srt), "-map", "0", "-map", "1",
                    "-c", "copy", "-metadata:s:s:0", "language=deu", str(clip)], check=True)
    out = tmp_path / "out.mkv"
    rc, err = run([clip, out, "-q"], capsys)
    assert rc == 0, err
    with av.open(str(out)) as c:
        assert [s.metadata.get("language") for s in c.streams.audio] == ["fra"]
        subs = c.streams.subtitles
        assert [s.metadata.get("language") for s in subs] == ["deu"]
        texts = [bytes(p) for p in c.demux(subs[0]) if p.size]
    assert len(texts) == 2 and b"hello" in texts[0]
    rc, err = run([clip, tmp_path / "out.mp4"], capsys)      # mp4 cannot hold SubRip: a note
    assert rc == 0 and "subtitle stream" in err and "dropped" in err, err
