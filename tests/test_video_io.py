"""zsm_tf.io: reading videos / image folders, writing videos / PNG folders (no TensorFlow)."""
from __future__ import annotations

import random
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from zsm_tf import io as vio

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "videos"
REALSHORT = VIDEOS / "realshort.mp4"
needs_videos = pytest.mark.skipif(not REALSHORT.is_file(), reason="needs ../shared/videos")


def write_png16(path, arr):
    """A 48-bit RGB PNG (Pillow can only write 16-bit grayscale)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def make_video(path, n, w=32, h=24, fps=24, audio=None):
    """A synthetic H.264 clip of ``n`` frames (optionally with a pcm/aac tone)."""
    c = av.open(str(path), "w")
    v = c.add_stream("libx264", rate=fps)
    v.width, v.height, v.pix_fmt = w, h, "yuv420p"
    a = None
    if audio:
        a = c.add_stream(audio, rate=44100)
        a.layout = "mono"
    sample = 0
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, (i * 2) % w] = 255
        img[..., 1] = i * 7 % 256
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = i
        c.mux(v.encode(f))
        if a is not None:
            per = 44100 // fps
            s = (np.sin(np.arange(sample, sample + per) / 10) * 0.3).astype(np.float32)
            fmt = a.codec_context.format.name
            data = s[None] if fmt == "fltp" else (s * 32767).astype(np.int16)[None]
            af = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
            af.sample_rate, af.pts = 44100, sample
            sample += per
            c.mux(a.encode(af))
    c.mux(v.encode(None))
    if a is not None:
        c.mux(a.encode(None))
    c.close()
    return path


def probe(path):
    c = av.open(str(path))
    v = c.streams.video[0]
    n = sum(1 for _ in c.decode(v))
    # the nominal rate: the average one counts the last frame's longer duration (a whole input
    # frame, so that the video ends with its audio)
    info = dict(frames=n, size=(v.codec_context.width, v.codec_context.height), fps=v.base_rate,
                audio=[s.codec_context.name for s in c.streams.audio], duration=c.duration / 1e6)
    c.close()
    return info


def leftovers(folder):
    return [p.name for p in Path(folder).iterdir() if ".partial" in p.name]


@needs_videos
def test_read_realshort():
    with vio.open_source(REALSHORT) as src:
        info = src.info
        assert (info.kind, info.width, info.height, info.num_frames) == ("video", 320, 240, 36)
        assert info.fps == Fraction(45000, 1499) and info.has_audio and info.audio_codec == "aac"
        frames = list(src)
    assert len(frames) == 36 and frames[0].shape == (240, 320, 3) and frames[0].dtype == np.uint8


def test_image_folder_natural_order(tmp_path):
    for i in (10, 2, 1):
        Image.fromarray(np.full((8, 12, 3), i, np.uint8)).save(tmp_path / f"f{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    with vio.open_source(tmp_path, fps=12) as src:
        assert (src.info.kind, src.info.width, src.info.height, src.info.num_frames) == ("images", 12, 8, 3)
        assert src.info.fps == 12
        assert [int(f[0, 0, 0]) for f in src] == [1, 2, 10]


@pytest.mark.parametrize("case, message", [
    ("sizes", "must be the same size"),
    ("gray", "grayscale"),
    ("gray16", "16-bit"),
    ("rgb48", "16-bit"),
    ("empty", "no images"),
])
def test_bad_image_folders(tmp_path, case, message):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    if case == "sizes":
        Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "b.png")
    elif case == "gray":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "b.png")
    elif case == "gray16":
        Image.fromarray(np.zeros((8, 8), np.uint16)).save(tmp_path / "b.png")
    elif case == "rgb48":
        write_png16(tmp_path / "b.png", np.zeros((8, 8, 3), np.uint16))
    elif case == "empty":
        (tmp_path / "a.png").unlink()
    with pytest.raises(vio.MediaError, match=message) as e:
        vio.open_source(tmp_path)
    assert "\n" not in str(e.value)


def test_bad_sources(tmp_path):
    with pytest.raises(vio.MediaError, match="no such file"):
        vio.open_source(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("not a video at all\n" * 50)
    with pytest.raises(vio.MediaError, match="not a video"):
        vio.open_source(tmp_path / "text.mp4")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "one.png")
    with pytest.raises(vio.MediaError, match="single image"):
        vio.open_source(tmp_path / "one.png")


@needs_videos
def test_corrupt_mid_stream(tmp_path):
    data = bytearray(REALSHORT.read_bytes())
    rng = random.Random(0)
    for i in range(len(data) // 3, len(data) // 3 + 5000):
        data[i] = rng.randrange(256)
    bad = tmp_path / "garbled.mp4"
    bad.write_bytes(bytes(data))
    with vio.open_source(bad) as src:
        with pytest.raises(vio.MediaError, match="corrupt|ends early"):
            for _ in src:
                pass


def test_truncated_stream(tmp_path):
    make_video(tmp_path / "full.mkv", 60)
    data = (tmp_path / "full.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[:len(data) // 2])
    with vio.open_source(tmp_path / "cut.mkv") as src:
        with pytest.raises(vio.MediaError, match="ends early|corrupt"):
            for _ in src:
                pass


def test_video_roundtrip_and_atomic(tmp_path):
    out = tmp_path / "o.mp4"
    frames = [np.full((24, 32, 3), 20 * i, np.uint8) for i in range(10)]
    with vio.open_writer(out, 32, 24, Fraction(30000, 1001)) as w:
        for f in frames:
            w.write(f)
        assert not out.exists()   # written under a temp name, renamed at the end
    info = probe(out)
    assert info["frames"] == 10 and info["size"] == (32, 24) and info["fps"] == Fraction(30000, 1001)
    assert leftovers(tmp_path) == []
    # a failure inside the writer leaves nothing behind
    with pytest.raises(RuntimeError):
        with vio.open_writer(tmp_path / "p.mkv", 32, 24, 25) as w:
            for i in range(80):
                w.write(frames[i % 10])
            assert len(leftovers(tmp_path)) == 1   # the encoder has written to the temp file
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]


@needs_videos
def test_audio_remux(tmp_path):
    out = tmp_path / "a.mp4"
    with vio.open_source(REALSHORT) as src, vio.open_writer(out, 320, 240, src.info.fps * 2,
                                                            audio_from=REALSHORT) as w:
        for f in src:
            w.write(f)
            w.write(f)
    info = probe(out)
    assert info["frames"] == 72 and info["fps"] == Fraction(90000, 1499) and info["audio"] == ["aac"]
    assert abs(info["duration"] - 1.1992) < 0.05


@pytest.mark.parametrize("ext, codec", [(".mp4", "aac"), (".webm", "opus")])
def test_audio_reencoded_when_container_forbids(tmp_path, ext, codec):
    src_path = make_video(tmp_path / "pcm.mkv", 12, audio="pcm_s16le")
    out = tmp_path / f"o{ext}"
    with vio.open_source(src_path) as src, vio.open_writer(out, 32, 24, 48, audio_from=src_path) as w:
        for f in src:
            w.write(f)
    assert probe(out)["audio"] == [codec]


def test_png_folder_writer(tmp_path):
    out = tmp_path / "frames"
    with vio.open_writer(str(out) + "/", 16, 8, 25) as w:
        for i in range(3):
            w.write(np.full((8, 16, 3), i, np.uint8))
        assert not out.exists()
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:06d}.png" for i in range(3)]
    assert np.asarray(Image.open(out / "frame_000002.png")).shape == (8, 16, 3)
    with pytest.raises(RuntimeError):
        with vio.open_writer(tmp_path / "other", 16, 8, 25) as w:
            w.write(np.zeros((8, 16, 3), np.uint8))
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_check_output_path(tmp_path):
    with pytest.raises(vio.MediaError, match="does not exist"):
        vio.check_output_path(tmp_path / "nope" / "o.mp4")
    (tmp_path / "file").write_text("x")
    with pytest.raises(vio.MediaError, match="does not exist|not a folder"):
        vio.check_output_path(tmp_path / "file" / "o.mp4")
    with pytest.raises(vio.MediaError, match="not a folder"):
        vio.check_output_path(tmp_path / "file")
    vio.check_output_path(tmp_path / "o.mp4")
    vio.check_output_path(tmp_path / "frames")
