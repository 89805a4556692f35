"""zsm_tf.inference and ``zsm-tf upscale``.

Most CLI tests swap the network for ``fake_model`` (numpy: blend neighbours in time, 3x3 box blur,
nearest x4), which is exact, flip-symmetric and fast, so they test the I/O, the stitching and the
error handling; the ``*real*`` tests use a tiny ZoomingSlowMo saved to ``tmp_path``.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from test_video_io import REALSHORT, leftovers, make_video, needs_videos, probe, write_png16

from zsm_tf import loading
from zsm_tf.commands import upscale
from zsm_tf.inference import SpaceTimeUpscaler, ramp_weights, tile_starts

ROOT = Path(__file__).resolve().parents[1]

FAKE_SRC = '''
import numpy as np
def fake_model(x):
    x = np.asarray(x, np.float32)
    b, n, h, w, c = x.shape
    seq = np.empty((b, 2 * n - 1, h, w, c), np.float32)
    seq[:, ::2] = x
    seq[:, 1::2] = (x[:, :-1] + x[:, 1:]) / 2
    p = np.pad(seq, [(0, 0), (0, 0), (1, 1), (1, 1), (0, 0)])
    blur = sum(p[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
    return blur.repeat(4, 2).repeat(4, 3)
'''
exec(FAKE_SRC)
fake_model = globals()["fake_model"]  # defined by FAKE_SRC, which subprocess tests run too


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)


def tiny_model(seed=0):
    """A tiny ZoomingSlowMo whose output is not ~0 (random init gives ~1e-3): last conv boosted."""
    import keras

    from zsm_tf.model import ZoomingSlowMo

    keras.utils.set_random_seed(seed)
    m = ZoomingSlowMo(nf=8, groups=1, front_rbs=1, back_rbs=1)
    last = m.reconstructor.conv_last
    last.kernel.assign(last.kernel * 300.0)
    last.bias.assign(last.bias * 0.0 + 0.5)
    return m


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    m = tiny_model()
    m.save_weights(str(d / "tiny.weights.h5"))
    (d / "model_config.json").write_text(json.dumps(m.get_config()))
    return m, d / "tiny.weights.h5"


def frames_folder(path, n, w, h, seed=0):
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 3))
    for i in range(n):
        Image.fromarray(np.roll(base, 2 * i, axis=1).astype(np.uint8)).save(path / f"{i:04d}.png")
    return path


def run_cli(argv, capsys):
    rc = upscale.main([str(a) for a in argv] + ["-q"])
    return rc, capsys.readouterr()


# ----------------------------------------------------------------------------------- inference


@pytest.mark.parametrize("window", [2, 3, 7])
def test_stream_gives_every_output_once(window):
    """Output g of K inputs: even g is input g/2, odd g the blend of its neighbours."""
    def model(x):   # no spatial change except nearest x4; time as in the fake
        seq = np.stack([x[:, i // 2] if i % 2 == 0 else (x[:, i // 2] + x[:, i // 2 + 1]) / 2
                        for i in range(2 * x.shape[1] - 1)], 1)
        return seq.repeat(4, 2).repeat(4, 3)

    for k in (2, 3, 7, 8, 13, 16):
        frames = [np.full((6, 10, 3), 10 * i, np.uint8) for i in range(k)]
        out = list(SpaceTimeUpscaler(model, window=window).stream(iter(frames)))
        assert len(out) == 2 * k - 1 and out[0].shape == (24, 40, 3)
        assert [int(o[0, 0, 0]) for o in out] == [5 * g for g in range(2 * k - 1)]


def test_stream_needs_two_frames():
    with pytest.raises(ValueError, match="at least 2"):
        list(SpaceTimeUpscaler(fake_model).stream(iter([np.zeros((8, 8, 3), np.uint8)])))


def test_tiles_blend_to_partition_of_unity():
    for length, tile, overlap in [(52, 16, 4), (72, 16, 4), (100, 32, 8), (64, 64, 8)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + tile == length and all(s % 4 == 0 for s in starts)
        total = np.zeros(length)
        for s, w in zip(starts, ramp_weights(starts, tile, length, overlap)):
            total[s:s + tile] += w
        np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_tiles_exact_for_local_model_and_padding():
    """A model with a 1-pixel reach: tiles (overlap >= 2x reach) change nothing; odd sizes padded."""
    x = np.random.default_rng(0).integers(0, 256, (3, 50, 70, 3)).astype(np.uint8)
    full = SpaceTimeUpscaler(fake_model).upscale_window(x)
    assert full.shape == (5, 200, 280, 3)
    for tile, overlap in [(16, 4), (24, 8), (32, 8)]:
        tiled = SpaceTimeUpscaler(fake_model, tile=tile, overlap=overlap, batch=3).upscale_window(x)
        np.testing.assert_allclose(tiled, full, atol=1e-5)
    ens = SpaceTimeUpscaler(fake_model, tile=24, overlap=8, self_ensemble=True, batch=5).upscale_window(x)
    np.testing.assert_allclose(ens, full, atol=1e-5)   # the fake is flip-symmetric


def test_tiles_agree_with_whole_frames_real_model(tiny_weights):
    model, _ = tiny_weights
    rng = np.random.default_rng(1)
    x = np.stack([np.asarray(Image.fromarray(rng.integers(0, 256, (12, 16, 3)).astype(np.uint8))
                             .resize((48, 32), Image.BICUBIC))] * 3)
    x[1] = np.roll(x[0], 2, axis=1)
    x[2] = np.roll(x[0], 4, axis=1)
    full = SpaceTimeUpscaler(model).upscale_window(x)
    assert full.std() > 0.02   # the boosted tiny model gives a real picture, not ~0
    tiled = SpaceTimeUpscaler(model, tile=32, overlap=16, batch=2).upscale_window(x)
    b = 16   # HR pixels away from the frame border
    diff = np.abs(tiled - full)[:, b:-b, b:-b]
    assert diff.max() < 0.01, diff.max()
    ens = SpaceTimeUpscaler(model, self_ensemble=True, batch=4).upscale_window(x)
    assert ens.shape == full.shape and 0 < np.abs(ens - full).mean() < 0.2


# ------------------------------------------------------------------------------------------ CLI


@needs_videos
def test_video_double_rate_keeps_audio(tmp_path, fake, capsys):
    out = tmp_path / "out.mp4"
    rc, cap = run_cli([REALSHORT, out], capsys)
    assert rc == 0, cap.err
    info = probe(out)
    assert info["frames"] == 2 * 36 - 1
    assert info["size"] == (4 * 320, 4 * 240)
    assert info["fps"] == 2 * Fraction(45000, 1499)
    assert info["audio"] == ["aac"]
    assert abs(info["duration"] - 1.2) < 0.1
    assert leftovers(tmp_path) == []


def test_slowmo_video_and_image_folders(tmp_path, fake, capsys):
    clip = make_video(tmp_path / "in.mkv", 9, w=36, h=26, fps=24, audio="pcm_s16le")
    rc, cap = run_cli([clip, tmp_path / "slow.mp4", "--fps-mode", "slowmo", "--window", "4"], capsys)
    assert rc == 0, cap.err
    info = probe(tmp_path / "slow.mp4")
    assert (info["frames"], info["size"], info["fps"], info["audio"]) == (17, (144, 104), 24, [])
    # folder of odd-sized images -> folder of PNGs (padded inside, cropped back)
    src = frames_folder(tmp_path / "frames", 4, 30, 22)
    rc, cap = run_cli([src, str(tmp_path / "pngs") + "/", "--tile", "16", "--batch", "3"], capsys)
    assert rc == 0, cap.err
    names = sorted(p.name for p in (tmp_path / "pngs").iterdir())
    assert names == [f"frame_{i:06d}.png" for i in range(7)]
    assert Image.open(tmp_path / "pngs" / names[0]).size == (120, 88)
    first = np.asarray(Image.open(tmp_path / "pngs" / names[0]))
    expect = SpaceTimeUpscaler(fake_model).upscale_window(
        np.stack([np.asarray(Image.open(p)) for p in sorted(src.iterdir())][:2]))[0]
    assert np.abs(first.astype(int) - np.round(expect * 255)).max() <= 1


def _bad_input(tmp_path, case):
    """(input, extra args, expected words in the error) for one bad case."""
    d = tmp_path / "in"
    d.mkdir()
    if case == "missing":
        return tmp_path / "nope.mp4", [], "no such file"
    if case == "not-video":
        (d / "x.mp4").write_text("hello\n" * 100)
        return d / "x.mp4", [], "not a video"
    if case == "no-frames":
        return d, [], "no images"
    if case == "audio-only":
        c = av.open(str(d / "a.mka"), "w")
        s = c.add_stream("pcm_s16le", rate=8000)
        s.layout = "mono"
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        fr.sample_rate, fr.pts = 8000, 0
        c.mux(s.encode(fr))
        c.mux(s.encode(None))
        c.close()
        return d / "a.mka", [], "no video stream"
    if case == "one-frame-video":
        return make_video(d / "one.mp4", 1), [], "1 frame"
    if case == "one-image":
        frames_folder(d, 1, 16, 16)
        return d, [], "1 frame"
    if case == "sizes":
        frames_folder(d, 3, 16, 16)
        Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(d / "0009.png")
        return d, [], "same size"
    if case == "gray":
        frames_folder(d, 3, 16, 16)
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(d / "0001.png")
        return d, [], "grayscale"
    if case == "16bit":
        frames_folder(d, 3, 16, 16)
        write_png16(d / "0001.png", np.zeros((16, 16, 3), np.uint16))
        return d, [], "16-bit"
    if case == "corrupt":
        data = bytearray(REALSHORT.read_bytes())
        rng = random.Random(0)
        for i in range(len(data) // 3, len(data) // 3 + 5000):
            data[i] = rng.randrange(256)
        (d / "bad.mp4").write_bytes(bytes(data))
        return d / "bad.mp4", ["--window", "3"], "corrupt"
    if case == "truncated":
        full = make_video(d / "full.mkv", 40)
        (d / "cut.mkv").write_bytes(full.read_bytes()[:full.stat().st_size // 2])
        full.unlink()
        return d / "cut.mkv", [], "ends early"
    if case == "bad-tile":
        frames_folder(d, 3, 16, 16)
        return d, ["--tile", "10"], "--tile"
    raise AssertionError(case)


BAD = ["missing", "not-video", "no-frames", "audio-only", "one-frame-video", "one-image", "sizes",
       "gray", "16bit", "bad-tile"]
# a damaged stream ("corrupt", "truncated") is found before any work: --strict refuses it, with
# both kinds of output (without --strict the frames before the damage are kept: test below)
CASES = ([(c, "out.mp4") for c in BAD] + [(c, o) for c in ("corrupt", "truncated")
                                          for o in ("out.mp4", "out_frames")])


@pytest.mark.parametrize("case, out_name", CASES)
def test_bad_input_one_line_error_no_output(tmp_path, fake, capsys, case, out_name):
    if case == "corrupt" and not REALSHORT.is_file():
        pytest.skip("needs ../shared/videos")
    src, extra, words = _bad_input(tmp_path, case)
    if case in ("corrupt", "truncated"):
        extra = [*extra, "--strict"]
    outdir = tmp_path / "out"
    outdir.mkdir()
    rc, cap = run_cli([src, outdir / out_name, *extra], capsys)
    assert rc != 0
    lines = [ln for ln in cap.err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("zsm-tf upscale: error:"), cap.err
    assert words in lines[0] and "Traceback" not in cap.err
    assert list(outdir.iterdir()) == []


@pytest.mark.parametrize("case, out_name", [(c, o) for c in ("corrupt", "truncated")
                                             for o in ("out.mp4", "out_frames")])
def test_damaged_stream_keeps_the_frames_before_the_damage(tmp_path, fake, capsys, case, out_name):
    """The damage is found by the scan before any work: the frames before it are upscaled and
    written, then the command exits 1 naming the first bad frame (no traceback, nothing hidden)."""
    if case == "corrupt" and not REALSHORT.is_file():
        pytest.skip("needs ../shared/videos")
    src, extra, words = _bad_input(tmp_path, case)
    outdir = tmp_path / "out"
    outdir.mkdir()
    rc, cap = run_cli([src, outdir / out_name, *extra], capsys)
    lines = [ln for ln in cap.err.strip().splitlines() if ln]
    assert rc == 1 and len(lines) == 1 and words in lines[0] and "Traceback" not in cap.err, cap.err
    good = int(lines[0].split(" at frame ")[1].split()[0])
    assert 2 <= good < (36 if case == "corrupt" else 40)
    assert f"from the {good} frames before it" in lines[0]
    out = outdir / out_name
    n = probe(out)["frames"] if out_name.endswith(".mp4") else len(list(out.iterdir()))
    assert n == 2 * good - 1
    assert sorted(p.name for p in outdir.iterdir()) == [out_name]   # nothing hidden left


@pytest.mark.parametrize("case", ["missing-dir", "parent-is-file", "same-as-input"])
def test_unwritable_output(tmp_path, fake, capsys, case):
    src = frames_folder(tmp_path / "in", 3, 16, 16)
    (tmp_path / "file").write_text("x")
    out = {"missing-dir": tmp_path / "no" / "out.mp4", "parent-is-file": tmp_path / "file" / "o.mp4",
           "same-as-input": src}[case]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc, cap = run_cli([src, out], capsys)
    assert rc == 1 and len(cap.err.strip().splitlines()) == 1 and "error:" in cap.err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_weights_errors(tmp_path, capsys, monkeypatch):
    src = frames_folder(tmp_path / "in", 3, 16, 16)
    monkeypatch.setattr(loading, "SHIPPED_WEIGHTS_DIR", str(tmp_path / "no_weights"))
    rc, cap = run_cli([src, tmp_path / "o.mp4"], capsys)
    assert rc == 1 and "--weights" in cap.err and len(cap.err.strip().splitlines()) == 1
    rc, cap = run_cli([src, tmp_path / "o.mp4", "--weights", tmp_path / "missing.weights.h5"], capsys)
    assert rc == 1 and "no such file" in cap.err and "missing.weights.h5" in cap.err
    (tmp_path / "x.pth").write_bytes(b"0")
    rc, cap = run_cli([src, tmp_path / "o.mp4", "--weights", tmp_path / "x.pth"], capsys)
    assert rc == 1 and "convert-weights" in cap.err
    assert not (tmp_path / "o.mp4").exists() and leftovers(tmp_path) == []


def test_real_weights_config_and_mismatch(tmp_path, capsys, tiny_weights, monkeypatch):
    model, weights = tiny_weights
    src = frames_folder(tmp_path / "in", 3, 16, 12)
    # model_config.json beside the weights
    rc, cap = run_cli([src, tmp_path / "a", "--weights", weights], capsys)
    assert rc == 0, cap.err
    got = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "a").iterdir())])
    x = np.stack([np.asarray(Image.open(p)) for p in sorted(src.iterdir())])
    want = np.round(SpaceTimeUpscaler(model).upscale_window(x) * 255)
    assert got.shape == (5, 48, 64, 3) and np.abs(got - want).max() <= 1
    # shipped weights: picked up without --weights
    monkeypatch.setattr(loading, "SHIPPED_WEIGHTS_DIR", str(weights.parent))
    rc, cap = run_cli([src, tmp_path / "b"], capsys)
    assert rc == 0, cap.err
    # --config for weights without model_config.json; a mismatch is one clear line
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "w.weights.h5").write_bytes(weights.read_bytes())
    rc, cap = run_cli([src, tmp_path / "c", "--weights", lone / "w.weights.h5",
                       "--config", weights.parent / "model_config.json"], capsys)
    assert rc == 0, cap.err
    (lone / "model_config.json").write_text(json.dumps({"nf": 16, "groups": 1, "front_rbs": 1, "back_rbs": 1}))
    rc, cap = run_cli([src, tmp_path / "d", "--weights", lone / "w.weights.h5"], capsys)
    assert rc == 1 and len(cap.err.strip().splitlines()) == 1 and "cannot load" in cap.err
    assert not (tmp_path / "d").exists()


MEMORY_SCRIPT = FAKE_SRC + textwrap.dedent('''
    import resource, sys
    from zsm_tf.commands import upscale
    upscale.load_model = lambda *a, **k: fake_model
    rc = upscale.main(sys.argv[1:] + ["-q"])
    print("RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc)
''')


def test_memory_flat_over_clip_length(tmp_path):
    """Peak RSS of a 400-frame clip within 40 MB of a 20-frame one (holding the 799 output frames
    of 384x256 would take 235 MB)."""
    rss = {}
    for n in (20, 400):
        clip = make_video(tmp_path / f"c{n}.mp4", n, w=96, h=64, fps=25)
        res = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(clip), str(tmp_path / f"o{n}.mp4")],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("RSS_KB")]
        assert line and line[0].split()[2] == "0", res.stderr[-2000:]
        rss[n] = int(line[0].split()[1]) / 1024
        assert probe(tmp_path / f"o{n}.mp4")["frames"] == 2 * n - 1
    print("peak RSS (MB):", rss)
    assert rss[400] - rss[20] < 40, rss
