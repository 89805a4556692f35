"""zsm_tf.metrics and ``zsm-tf evaluate`` (vid4 and vimeo layouts) on small generated datasets."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from test_upscale import fake_model, tiny_weights  # noqa: F401  (tiny_weights is a fixture)

from zsm_tf.commands import evaluate
from zsm_tf.evaluation import baseline_frames
from zsm_tf.metrics import psnr_y, rgb_to_y, ssim_y


def smooth_frames(n, w, h, seed=0):
    """A smooth moving picture (so bicubic is a fair baseline)."""
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.fromarray(rng.integers(0, 256, (h // 8, w // 8 + n, 3)).astype(np.uint8))
                      .resize(((w // 8 + n) * 8, h), Image.BICUBIC))
    return [np.ascontiguousarray(base[:, 4 * i:4 * i + w]) for i in range(n)]


def make_vid4(root, clips=(("calendar", 5), ("city", 6)), w=64, h=48):
    for k, (name, n) in enumerate(clips):
        d = root / name
        d.mkdir(parents=True)
        for i, f in enumerate(smooth_frames(n, w, h, seed=k)):
            Image.fromarray(f).save(d / f"{i:08d}.png")
    return root


def make_vimeo(root, names=("00001/0001", "00002/0007"), w=64, h=32):
    for k, name in enumerate(names):
        d = root / "sequences" / name
        d.mkdir(parents=True)
        for i, f in enumerate(smooth_frames(7, w, h, seed=k)):
            Image.fromarray(f).save(d / f"im{i + 1}.png")
    (root / "sep_testlist.txt").write_text("\n".join(names) + "\n")
    return root


# ------------------------------------------------------------------------------------- metrics


def test_y_channel_bt601_range():
    assert rgb_to_y(np.array([0, 0, 0])) == pytest.approx(16.0)
    assert rgb_to_y(np.array([255, 255, 255])) == pytest.approx(235.0)
    assert rgb_to_y(np.array([255, 0, 0])) == pytest.approx(16 + 65.481)


def test_psnr_ssim_values():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 40, 3)).astype(np.uint8)
    assert psnr_y(a, a) == math.inf and ssim_y(a, a) == pytest.approx(1.0, abs=1e-6)
    b = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)
    ya, yb = rgb_to_y(a)[2:-2, 2:-2], rgb_to_y(b)[2:-2, 2:-2]
    want = 10 * math.log10(255 ** 2 / np.mean((ya - yb) ** 2))
    assert psnr_y(a, b, crop_border=2) == pytest.approx(want, abs=1e-3)
    assert 0.9 < ssim_y(a, b) < 1.0
    assert ssim_y(a, 255 - a) < 0.1
    with pytest.raises(ValueError):
        ssim_y(a[:12, :12], b[:12, :12], crop_border=2)


def test_baseline_blends_neighbours():
    lr = [np.full((4, 4, 3), v, np.uint8) for v in (10, 30, 31)]
    out = list(baseline_frames(lr))
    assert len(out) == 5 and out[0].shape == (16, 16, 3)
    assert [int(o[8, 8, 0]) for o in out] == [10, 20, 30, 30, 31]   # 30.5 rounds half to even


# ------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(evaluate, "load_model", lambda *a, **k: fake_model)


def parse_table(text):
    rows = {}
    for ln in text.splitlines():
        parts = ln.split()
        if len(parts) == 8 and parts[1].isdigit():  # all frames, then new frames: blend, model
            rows[parts[0]] = (int(parts[1]), *map(float, parts[2:6]))
    return rows


def test_vid4_table(tmp_path, fake, capsys):
    data = make_vid4(tmp_path / "vid4")
    rc = evaluate.main(["--data", str(data), "--layout", "vid4", "--crop-border", "2", "-q",
                        "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    rows = parse_table(out.out)
    assert set(rows) == {"calendar", "city", "average"}
    assert rows["calendar"][0] == 5 and rows["city"][0] == 5   # 6 frames: the last has no successor
    for name, (_, bp, bs, mp, ms) in rows.items():
        assert 20 < bp < 60 and 0.5 < bs <= 1 and 10 < mp < 60 and 0 < ms <= 1, (name, rows[name])
    assert rows["average"][1] == pytest.approx((rows["calendar"][1] + rows["city"][1]) / 2, abs=0.01)
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["clips"]["city"]["model"][0] == pytest.approx(rows["city"][3], abs=0.01)


def test_vimeo_table(tmp_path, fake, capsys):
    data = make_vimeo(tmp_path / "vimeo")
    rc = evaluate.main(["--data", str(data), "--layout", "vimeo", "-q", "--limit", "1"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    rows = parse_table(out.out)
    assert set(rows) == {"00001/0001", "average"} and rows["average"][0] == 7


def test_vid4_real_tiny_model(tmp_path, capsys, tiny_weights):  # noqa: F811
    _, weights = tiny_weights
    data = make_vid4(tmp_path / "vid4", clips=(("walk", 3),), w=32, h=32)
    rc = evaluate.main(["--data", str(data), "--layout", "vid4", "--weights", str(weights), "-q"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert parse_table(out.out)["walk"][0] == 3


@pytest.mark.parametrize("case, words", [
    ("missing", "no such folder"),
    ("empty", "no clip folders"),
    ("no-list", "sep_testlist.txt"),
    ("missing-frame", "missing im7.png"),
    ("gray", "grayscale"),
])
def test_evaluate_errors(tmp_path, fake, capsys, case, words):
    layout = "vid4"
    data = tmp_path / "d"
    if case == "empty":
        data.mkdir()
    elif case == "no-list":
        data.mkdir()
        layout = "vimeo"
    elif case == "missing-frame":
        make_vimeo(data)
        (data / "sequences" / "00002" / "0007" / "im7.png").unlink()
        layout = "vimeo"
    elif case == "gray":
        make_vid4(data, clips=(("a", 3),))
        Image.fromarray(np.zeros((48, 64), np.uint8)).save(data / "a" / "00000001.png")
    rc = evaluate.main(["--data", str(data), "--layout", layout, "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and err.startswith("zsm-tf evaluate: error:")
    assert words in err
