"""Hostile input to ``zsm-tf upscale``, in process with ``fake_model`` (cheap): every flag and
path check before the scan and the model; a frames folder damaged part-way keeps the frames
before the damage (like a damaged video); commits by time as well as by frames; a full disk
keeps the committed work and says so (a real small tmpfs when root can mount one, else a
simulated ENOSPC)."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import time

import av
import numpy as np
import pytest
from test_upscale import fake_model, frames_folder
from test_video_io import make_video

from zsm_tf.commands import upscale
from zsm_tf.pipeline import job, loop
from zsm_tf.pipeline.resume import work_dir_for


def run(argv, capsys):
    rc = upscale.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def one_error(err):
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture
def guarded(monkeypatch):
    """The model (and, with ``scanned``, the scan) must not be reached."""
    calls = {"load": 0, "scan": 0}

    def load(*a, **k):
        calls["load"] += 1
        return fake_model
    real = job.inspect_input

    def scan(*a, **k):
        calls["scan"] += 1
        return real(*a, **k)
    monkeypatch.setattr(upscale, "load_model", load)
    monkeypatch.setattr(job, "inspect_input", scan)
    return calls


@pytest.mark.parametrize("case, words", [
    ("crf", ["--crf", "0..51", "-5"]),
    ("crf-webm", ["--crf", "0..63", "70"]),
    ("max-memory", ["--max-memory", "lots"]),
    ("weights", ["--weights", "nope.weights.h5"]),
    ("config", ["--config", "nope.json"]),
    ("locked", ["another zsm-tf upscale is writing", "out.mp4"]),
    ("segment-seconds", ["--segment-seconds", "-1"]),
])
def test_flag_and_path_checks_before_the_scan_and_the_model(tmp_path, guarded, capsys, case, words):
    src = make_video(tmp_path / "in.mp4", 9, w=20, h=16)
    out = tmp_path / ("out.webm" if case == "crf-webm" else "out.mp4")
    extra = {"crf": ["--crf", "-5"], "crf-webm": ["--crf", "70"], "max-memory": ["--max-memory", "lots"],
             "weights": ["--weights", tmp_path / "nope.weights.h5"],
             "config": ["--config", tmp_path / "nope.json"],
             "segment-seconds": ["--segment-seconds", "-1"]}.get(case, [])
    held = None
    if case == "locked":   # another run holds the work folder's lock
        work = work_dir_for(out)
        work.mkdir()
        held = os.open(str(work / "lock"), os.O_RDWR | os.O_CREAT)
        fcntl.flock(held, fcntl.LOCK_EX)
    try:
        rc, err = run([src, out, "-q", *extra], capsys)
    finally:
        if held is not None:
            os.close(held)
    line = one_error(err)
    assert rc == 1 and all(w in line for w in words), err
    assert guarded == {"load": 0, "scan": 0}, (guarded, err)
    assert not out.exists()


def test_corrupt_early_frame_refused_before_the_model(tmp_path, guarded, capsys):
    src = frames_folder(tmp_path / "in", 12, 20, 16)
    truncate(src / "0001.png")
    rc, err = run([src, tmp_path / "out.mp4", "-q"], capsys)
    line = one_error(err)
    assert rc == 1 and "0001.png" in line and "need at least 2" in line, err
    assert guarded["load"] == 0 and not (tmp_path / "out.mp4").exists()


def count_frames(path):
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_folder_damaged_part_way_keeps_the_frames_before(tmp_path, monkeypatch, capsys):
    """A truncated PNG at frame 30 of 40: like a damaged video, the 30 frames before it are
    upscaled and written (59 output frames), then exit 1 naming the file; --strict refuses."""
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    src = frames_folder(tmp_path / "in", 40, 20, 16)
    truncate(src / "0030.png")
    out = tmp_path / "out.mp4"
    rc, err = run([src, out, "--segment-frames", "12", "--window", "3"], capsys)
    line = one_error(err)
    assert rc == 1 and "0030.png" in line and "from the 30 frames before it" in line, err
    assert "damaged image" in err and count_frames(out) == 59
    rc, err = run([src, tmp_path / "strict.mp4", "--strict", "-q"], capsys)
    assert rc == 1 and "0030.png" in one_error(err) and not (tmp_path / "strict.mp4").exists()


def test_rgba_frames_say_alpha_is_dropped(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 20, 4), 60 * i, np.uint8), "RGBA").save(src / f"{i}.png")
    rc, err = run([src, tmp_path / "out"], capsys)
    assert rc == 0 and "alpha channel" in err and "dropped" in err, err


def slow_then_interrupted(calls_before_interrupt, delay):
    calls = [0]

    def model(x):
        calls[0] += 1
        if calls[0] == calls_before_interrupt:
            raise KeyboardInterrupt()
        time.sleep(delay)
        return fake_model(x)
    return model


def committed(out):
    return json.loads((work_dir_for(out) / "manifest.json").read_text())["segments"]


def test_commits_by_time_as_well_as_by_frames(tmp_path, monkeypatch, capsys):
    """--segment-frames far above the clip, but a slow model: segments are committed at window
    boundaries once --segment-seconds have passed, and a rerun resumes from them."""
    src = frames_folder(tmp_path / "in", 13, 20, 16)
    out = tmp_path / "out"
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: slow_then_interrupted(5, 0.2))
    args = ["--window", "3", "--segment-frames", "1000", "--segment-seconds", "0.3"]
    rc, err = run([src, out, *args, "-q"], capsys)
    assert rc == 130 and "output frames are kept" in err, err
    segs = committed(out)
    assert 1 <= len(segs) < 4 and segs[-1]["end"] < 25, segs
    assert all((s["end"] - 1) % 4 == 0 for s in segs)           # on window boundaries
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    rc, err = run([src, out, *args], capsys)
    assert rc == 0 and f"resuming: {segs[-1]['end']} output frames already done" in err, err
    assert len(list(out.iterdir())) == 25


def enospc_after(n, real):
    calls = [0]

    def write(path, frame):
        calls[0] += 1
        if calls[0] > n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, frame)
    return write


def test_full_disk_keeps_the_work_and_says_so_simulated(tmp_path, monkeypatch, capsys):
    src = frames_folder(tmp_path / "in", 13, 20, 16)
    out = tmp_path / "out"
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    monkeypatch.setattr(loop, "write_png", enospc_after(10, loop.write_png))
    args = ["--window", "3", "--segment-frames", "4"]
    rc, err = run([src, out, *args, "-q"], capsys)
    line = one_error(err)
    assert rc == 1 and "disk full" in line and "9 of 25 output frames are kept" in line, err
    assert "free space and run the same command again to resume" in line and "per output frame" in line
    assert work_dir_for(out).is_dir() and not out.exists()
    monkeypatch.undo()
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    rc, err = run([src, out, *args], capsys)
    assert rc == 0 and "resuming: 9 output frames already done" in err, err


@pytest.fixture
def small_disk(tmp_path):
    """A 160 kB tmpfs (root only; skipped where it cannot be mounted)."""
    d = tmp_path / "disk"
    d.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(d)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def test_full_disk_real_tmpfs(tmp_path, small_disk, monkeypatch, capsys):
    src = frames_folder(tmp_path / "in", 41, 40, 32)
    out = small_disk / "out"
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    rc, err = run([src, out, "--window", "3", "--segment-frames", "8"], capsys)
    line = one_error(err)
    assert rc == 1 and "disk full" in line and "free space and run the same command again" in line, err
    assert "the output needs about" in err          # said up front, after the first segment
    assert work_dir_for(out).is_dir() and not out.exists()


# ------------------------------------------------------------------- messages naming the problem


@pytest.mark.parametrize("argv, words", [
    (["--model", "nf=abc"], ["model option nf", "'abc'", "--model nf="]),
    (["--model", "nf=-4"], ["model option nf", "-4"]),
    (["--model", "back_rbs=1.5"], ["model option back_rbs", "1.5"]),
    (["--data", "videos:/nope/clips"], ["--data videos:/nope/clips: no such folder"]),
])
def test_train_messages_name_the_option(tmp_path, capsys, argv, words):
    from zsm_tf.commands.train import main

    rc = main([*argv, "--output-dir", str(tmp_path / "run"), "--steps", "1"])
    line = one_error(capsys.readouterr().err)
    assert rc == 2 and line.startswith("train.py: error:") and all(w in line for w in words), line
    assert "filters" not in line and "not supported between" not in line
    assert not (tmp_path / "run").exists()


def test_convert_weights_messages(tmp_path, capsys):
    from zsm_tf.commands.convert import main

    pickled = tmp_path / "random.npz"
    np.savez(pickled, a=np.array([object()], dtype=object))
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros((3, 3)))
    dst = str(tmp_path / "w.weights.h5")
    rc = main([str(pickled), dst])
    line = one_error(capsys.readouterr().err)
    assert rc == 2 and str(pickled) in line and "Python objects" in line and "allow_pickle" not in line
    rc = main([str(plain), dst])
    line = one_error(capsys.readouterr().err)
    assert rc == 2 and str(plain) in line and "not a Zooming Slow-Mo state_dict" in line, line
    rc = main([str(tmp_path / "nope.pth"), dst])
    line = one_error(capsys.readouterr().err)
    assert rc == 2 and "nope.pth" in line and "no such file" in line


def test_read_only_file_system_is_named(tmp_path, guarded, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        src = make_video(tmp_path / "in.mp4", 5, w=20, h=16)
        rc, err = run([src, ro / "out.mp4", "-q"], capsys)
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
    line = one_error(err)
    assert rc == 1 and "read-only file system" in line and "permission denied" not in line, line
    assert guarded == {"load": 0, "scan": 0}


# ------------------------------------------------------------------------------- what is kept


def tagged_mkv(tmp_path, audio):
    """A 6-frame 10 fps clip with a titled French audio track (``audio`` codec) in .mkv."""
    src = make_video(tmp_path / "raw.mp4", 6, w=32, h=24, fps=10, audio="aac")
    out = tmp_path / "in.mkv"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(src), "-map", "0", "-c:v", "copy",
                    "-c:a", audio, "-metadata:s:a:0", "title=Commentary", "-metadata:s:a:0",
                    "language=fra", str(out)], check=True)
    return out


def streams(path):
    """(the video stream's duration in seconds, [(audio codec, tags)])."""
    res = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    ss = json.loads(res.stdout)["streams"]
    v = next(s for s in ss if s["codec_type"] == "video")
    if "duration" in v:
        end = float(v["duration"])
    else:   # Matroska: a DURATION tag, HH:MM:SS.nnnnnnnnn
        h, m, sec = v["tags"]["DURATION"].split(":")
        end = int(h) * 3600 + int(m) * 60 + float(sec)
    return end, [(s["codec_name"], s.get("tags", {})) for s in ss if s["codec_type"] == "audio"]


@pytest.mark.parametrize("ext, audio, said, title_kept", [
    (".mp4", "pcm_s16le", "audio re-encoded to AAC", False),
    (".mkv", "pcm_s16le", "audio copied", True),
    (".webm", "aac", "audio re-encoded to Opus", True),
])
def test_what_is_kept_is_what_is_said(tmp_path, monkeypatch, capsys, ext, audio, said, title_kept):
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    src = tagged_mkv(tmp_path, audio)
    out = tmp_path / f"out{ext}"
    rc, err = run([src, out], capsys)
    assert rc == 0 and said in err, err
    assert ("'Commentary' is not kept" in err) == (not title_kept), err
    end, tracks = streams(out)
    assert abs(end - 0.6) < 1e-3, end                  # the last frame lasts a whole input frame
    assert tracks[0][1].get("language") == "fra"
    assert (tracks[0][1].get("title") == "Commentary") == title_kept
