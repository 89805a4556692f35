"""Resumable ``zsm-tf upscale``: a real ``kill -9`` and SIGTERM of a running command, then a rerun
that continues and gives the same decoded frames as an uninterrupted run; what starts afresh;
nothing left beside the output.

The subprocess tests use a tiny randomly initialised ZoomingSlowMo saved in ``tmp_path`` (so
TensorFlow runs for real); the in-process ones swap the network for ``fake_model``.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from test_upscale import fake_model, frames_folder, tiny_model
from test_video_io import make_video

from zsm_tf.commands import upscale
from zsm_tf.inference import window_schedule
from zsm_tf.pipeline.resume import plan_segments, work_dir_for

ROOT = Path(__file__).resolve().parents[1]


def decoded(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def beside(folder, name):
    """Everything in ``folder`` except ``name`` (hidden entries included)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name != name)


def committed(work):
    try:
        return len(json.loads((work / "manifest.json").read_text())["segments"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    m = tiny_model()
    m.save_weights(str(d / "tiny.weights.h5"))
    (d / "model_config.json").write_text(json.dumps(m.get_config()))
    return d / "tiny.weights.h5"


def start(src, out, weights, *extra):
    cmd = [sys.executable, "-m", "zsm_tf.cli", "upscale", str(src), str(out), "--weights", str(weights),
           "--window", "3", "--segment-frames", "4", "-q", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt_after(proc, work, segments, sig, timeout=120):
    """Sends ``sig`` once ``segments`` segments are committed; returns how many were."""
    t0 = time.time()
    while committed(work) < segments:
        assert proc.poll() is None, f"finished before it could be interrupted: {proc.stderr.read()}"
        assert time.time() - t0 < timeout
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return committed(work), proc.returncode, err


def test_plan_segments_start_on_window_boundaries():
    for k, n, seg in [(40, 3, 4), (40, 7, 48), (9, 4, 1), (5, 7, 10), (100, 5, 30)]:
        plan = plan_segments(k, n, seg)
        assert plan[0].start == 0 and plan[-1].end == 2 * k - 1
        assert all(a.end == b.start for a, b in zip(plan, plan[1:]))
        for s in plan[1:]:
            assert (s.start - 1) % (2 * (n - 1)) == 0                   # just after a shared frame
            assert s.feed == (s.start - 1) // 2 or s.feed == max(0, k - n)   # tail: last window
            assert 2 * s.feed <= s.start
        # derived from the one window rule: each segment starts at a window's first new output
        # and is fed from that window's start
        calls = window_schedule(k, n)
        assert [(s.feed, s.start) for s in plan] == [(c[0], 2 * c[0] + c[1]) for c in calls
                                                     if 2 * c[0] + c[1] in {s.start for s in plan}]


def test_kill9_and_sigterm_then_rerun_gives_the_same_video(tmp_path, tiny):
    """kill -9 part-way, then SIGTERM part-way through the rerun, then a final rerun: the result
    decodes to exactly the frames of an uninterrupted run, and nothing is left beside it."""
    src = make_video(tmp_path / "in.mp4", 29, w=48, h=32, fps=24, audio="aac")
    ref = tmp_path / "ref" / "out.mp4"
    ref.parent.mkdir()
    argv = [src, ref, "--weights", tiny, "--window", "3", "--segment-frames", "4", "-q"]
    assert upscale.main([str(a) for a in argv]) == 0       # in-process: one TF start-up fewer
    assert beside(ref.parent, "out.mp4") == []
    total_segments = len(plan_segments(29, 3, 4))          # 14 segments of 4 outputs (+1)

    out = tmp_path / "run" / "out.mp4"
    out.parent.mkdir()
    work = work_dir_for(out)
    n1, rc, err = interrupt_after(start(src, out, tiny), work, total_segments // 3, signal.SIGKILL)
    assert rc == -signal.SIGKILL and not out.exists() and n1 < total_segments
    assert beside(out.parent, "out.mp4") == [work.name]      # the work folder, to resume from

    p = start(src, out, tiny)
    n2, rc, err = interrupt_after(p, work, total_segments * 2 // 3, signal.SIGTERM)
    assert rc == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "terminated" in lines[0] and "run the same command again" in lines[0], err
    assert n2 > n1 and not out.exists()

    p = start(src, out, tiny, "--segment-frames", "4")       # -q hides the note; check the log below
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert beside(out.parent, "out.mp4") == []               # work folder removed
    a, b = decoded(ref), decoded(out)
    assert len(a) == len(b) == 57
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert audio_packets(out) == audio_packets(ref) and len(audio_packets(out)) > 10


def audio_packets(path):
    with av.open(str(path)) as c:
        assert [s.codec_context.name for s in c.streams.audio] == ["aac"]
        return [(p.pts, bytes(p)) for p in c.demux(audio=0) if p.size]


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)


class Boom(KeyboardInterrupt):
    pass


def crashing_model(after):
    """fake_model that raises Ctrl-C's KeyboardInterrupt on call number ``after``."""
    calls = [0]

    def model(x):
        calls[0] += 1
        if calls[0] == after:
            raise Boom()
        return fake_model(x)
    return model


def run(argv, capsys):
    rc = upscale.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def test_png_output_resumes_after_ctrl_c_and_notes(tmp_path, monkeypatch, capsys):
    src = frames_folder(tmp_path / "in", 13, 20, 16)
    args = ["--window", "3", "--segment-frames", "4"]
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    rc, err = run([src, tmp_path / "ref", *args, "-q"], capsys)
    assert rc == 0, err
    out = tmp_path / "out"
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: crashing_model(4))
    rc, err = run([src, out, *args, "-q"], capsys)
    assert rc == 130 and "interrupted; 13 of 25 output frames are kept" in err, err
    assert not out.exists() and (tmp_path / ".out.zsm-work" / "frames").is_dir()
    # a stray, uncommitted frame past the committed ones is dropped on resume
    Image.fromarray(np.zeros((64, 80, 3), np.uint8)).save(tmp_path / ".out.zsm-work" / "frames" / "frame_000013.png")
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    rc, err = run([src, out, *args], capsys)
    assert rc == 0 and "resuming: 13 output frames already done" in err, err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ref").iterdir()) and len(names) == 25
    for n in names:
        assert np.array_equal(np.asarray(Image.open(out / n)), np.asarray(Image.open(tmp_path / "ref" / n)))
    assert beside(tmp_path, "out") == ["in", "ref"]


def test_changed_flag_or_input_starts_afresh_and_no_resume(tmp_path, monkeypatch, capsys):
    clip = make_video(tmp_path / "in.mp4", 13, w=20, h=16)
    out = tmp_path / "o.mp4"
    args = ["--window", "3", "--segment-frames", "4"]

    def interrupted(*extra):
        monkeypatch.setattr(upscale, "load_model", lambda *a, **k: crashing_model(3))
        rc, err = run([clip, out, *args, *extra], capsys)
        assert rc == 130 and work_dir_for(out).is_dir(), err

    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    interrupted()
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    rc, err = run([clip, out, *args, "--crf", "30"], capsys)
    assert rc == 0 and "differs (--crf): starting afresh" in err, err
    out.unlink()
    interrupted()
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    rc, err = run([clip, out, *args, "--no-resume"], capsys)
    assert rc == 0 and "--no-resume: discarding" in err and "resuming" not in err, err
    out.unlink()
    interrupted()
    make_video(clip, 13, w=20, h=16, fps=25)                 # the input changed
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    rc, err = run([clip, out, *args], capsys)
    assert rc == 0 and "differs (input): starting afresh" in err, err
    assert beside(tmp_path, "o.mp4") == ["in.mp4"]


def test_failure_that_cannot_resume_leaves_nothing(tmp_path, monkeypatch, capsys):
    clip = make_video(tmp_path / "in.mp4", 13, w=20, h=16)
    out = tmp_path / "o.mp4"

    def broken(x):
        raise ValueError("model exploded")
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: broken)
    rc, err = run([clip, out, "-q"], capsys)
    assert rc == 1 and "model exploded" in err and len(err.strip().splitlines()) == 1
    assert beside(tmp_path, "in.mp4") == []


def test_existing_output_needs_overwrite(tmp_path, fake, capsys):
    src = frames_folder(tmp_path / "in", 3, 16, 16)
    (tmp_path / "o.mp4").write_bytes(b"precious")
    rc, err = run([src, tmp_path / "o.mp4", "-q"], capsys)
    assert rc == 1 and "--overwrite" in err and (tmp_path / "o.mp4").read_bytes() == b"precious"
    rc, err = run([src, tmp_path / "o.mp4", "-q", "--overwrite"], capsys)
    assert rc == 0 and len(decoded(tmp_path / "o.mp4")) == 5
    # a folder holding frames 0-9 of something else: refused, then replaced whole (not mixed)
    pngs = frames_folder(tmp_path / "pngs", 10, 8, 8)
    rc, err = run([src, pngs, "-q"], capsys)
    assert rc == 1 and "not empty" in err and len(list(pngs.iterdir())) == 10
    rc, err = run([src, pngs, "-q", "--overwrite"], capsys)
    assert rc == 0 and sorted(p.name for p in pngs.iterdir()) == [f"frame_{i:06d}.png" for i in range(5)]
    (tmp_path / "empty").mkdir()
    rc, err = run([src, tmp_path / "empty", "-q"], capsys)
    assert rc == 0 and len(list((tmp_path / "empty").iterdir())) == 5
    assert beside(tmp_path, "o.mp4") == ["empty", "in", "pngs"]


def test_locked_by_another_run(tmp_path, fake, capsys):
    import fcntl

    src = frames_folder(tmp_path / "in", 3, 16, 16)
    work = work_dir_for(tmp_path / "o.mp4")
    work.mkdir()
    with open(work / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        rc, err = run([src, tmp_path / "o.mp4", "-q"], capsys)
    assert rc == 1 and "another zsm-tf upscale is writing" in err


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".mov", ".avi", ".webm"])
def test_segments_join_in_every_container(tmp_path, fake, capsys, ext):
    """Many segments (--segment-frames 4) joined by stream copy: every frame there, in order,
    at its time, close to the model's (lossless) output; the audio copied."""
    from zsm_tf.inference import SpaceTimeUpscaler

    clip = make_video(tmp_path / "in.mkv", 15, w=24, h=16, fps=24, audio="pcm_s16le")
    out = tmp_path / f"o{ext}"
    rc, err = run([clip, out, "--window", "4", "--segment-frames", "4", "-q"], capsys)
    assert rc == 0, err
    got = decoded(out)
    with av.open(str(clip)) as c:
        x = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    want = [np.asarray(f, np.float64) for f in SpaceTimeUpscaler(fake_model, window=4).stream(iter(x))]
    assert len(got) == len(want) == 29
    assert max(np.abs(g - w).mean() for g, w in zip(got, want)) < 4   # H.264/VP9 at crf 18
    with av.open(str(out)) as c:
        st = c.streams.video[0]
        times = [float(f.pts * st.time_base) for f in c.decode(st)]
        assert len(c.streams.audio) == 1
    # (AVI stores no timestamps: its demuxer starts the frames one B-frame delay late, as before)
    assert max(abs(t - times[0] - g / 48) for g, t in enumerate(times)) <= 0.0006
    assert beside(tmp_path, out.name) == ["in.mkv"]


# ----------------------------------------------------------- the job's rules, as a library says them


def test_library_errors_are_typed_and_name_settings_the_command_names_flags(tmp_path, capsys):
    """VideoJob raises JobSettingError naming the setting (no option in the message); the
    command says the same with the option."""
    from zsm_tf.pipeline.job import JobSettingError
    from zsm_tf.pipeline.video import VideoJob

    src = frames_folder(tmp_path / "in", 6, 16, 16)
    (tmp_path / "taken.mp4").write_bytes(b"precious")
    damaged = frames_folder(tmp_path / "damaged", 6, 20, 16)
    data = (damaged / "0003.png").read_bytes()
    (damaged / "0003.png").write_bytes(data[:len(data) // 2])   # as test_hostile_input.truncate
    cases = [("fps", dict(fps=0), src, "o.mp4", "fps must be positive", "--fps must be positive"),
             ("segment_frames", dict(segment_frames=0), src, "o.mp4", "segment_frames must be at least 1",
              "--segment-frames must be at least 1"),
             ("crf", dict(crf=99), src, "o.mp4", "crf must be in 0..51", "--crf must be in 0..51"),
             ("overwrite", {}, src, "taken.mp4", "pass overwrite=True to replace it",
              "pass --overwrite to replace it"),
             ("strict", dict(strict=True), damaged, "o.mp4", "nothing written (strict=True)",
              "nothing written (--strict)")]
    flags = {"fps": ["--fps", "0"], "segment_frames": ["--segment-frames", "0"], "crf": ["--crf", "99"],
             "strict": ["--strict"]}
    for setting, kwargs, inp, out, said, flagged in cases:
        with pytest.raises(JobSettingError) as e:
            VideoJob(inp, tmp_path / out, **kwargs).close()
        assert e.value.setting == setting and said in str(e.value) and "--" not in str(e.value)
        assert isinstance(e.value, ValueError)
        rc, err = run([inp, tmp_path / out, "-q", *flags.get(setting, [])], capsys)
        assert rc == 1 and flagged in err and len(err.strip().splitlines()) == 1, err


def test_job_identity_is_said_once(tmp_path):
    """What decides a resume: one JobIdentity; the settings that change the output are in it,
    those of speed or of what to do with an earlier run are not."""
    from zsm_tf.commands.common import SETTING_FLAGS
    from zsm_tf.inference import SpaceTimeUpscaler
    from zsm_tf.pipeline.job import JobIdentity, Said
    from zsm_tf.pipeline.video import VideoJob

    src = frames_folder(tmp_path / "in", 6, 16, 16)

    def identity(**kwargs):
        up = SpaceTimeUpscaler(fake_model, window=kwargs.pop("window", 3))
        with VideoJob(src, tmp_path / "o.mp4", **kwargs) as job:
            return job.identity(up)

    base = identity()
    assert isinstance(base, JobIdentity) and base.record == identity(segment_seconds=5, strict=True,
                                                                     resume=False).record
    assert set(base.record["settings"]) == {"fps", "fps_mode", "crf", "segment_frames", "window", "tile",
                                            "overlap", "max_memory", "self_ensemble", "batch", "precision"}
    assert identity(crf=30).differences(base.record) == ["crf"]
    assert identity(window=4, fps=30).differences(base.record) == ["fps", "window"]
    said = Said("changed ({settings}); {setting} starts afresh", ["crf", "resume", "input"])
    assert str(said) == "changed (crf, resume=False, input); crf starts afresh"
    assert said.said_with(SETTING_FLAGS) == "changed (--crf, --no-resume, input); --crf starts afresh"


def test_one_progress_interface(tmp_path, monkeypatch, capsys):
    """The scan, the upscale and the notes reach one Progress; the command shows it as bars
    with the rate and notes naming the options."""
    from zsm_tf.inference import SpaceTimeUpscaler
    from zsm_tf.pipeline.video import VideoJob
    from zsm_tf.progress import Progress

    class Recorder(Progress):
        def __init__(self):
            self.tasks, self.done, self.notes, self.said = [], {}, [], []

        def start(self, total, unit="frame", desc="", done=0, keep=True):
            self.tasks.append(desc)
            self.done[desc] = done

        def advance(self, n=1):
            self.done[self.tasks[-1]] += n

        def describe(self, text):
            self.said.append(text)

        def note(self, msg):
            self.notes.append(str(msg))

    src = frames_folder(tmp_path / "in", 33, 16, 16)
    rec = Recorder()
    with VideoJob(src, tmp_path / "o", progress=rec, segment_frames=4) as job:
        job.run(SpaceTimeUpscaler(fake_model, window=3))
    assert rec.tasks == ["scan", "upscale"] and rec.done == {"scan": 32, "upscale": 65}
    assert rec.said[0].startswith("first window") and "audio" not in " ".join(rec.notes)
    # the command: a bar with the rate, and the library's notes said with the options
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: crashing_model(4))
    rc, err = run([src, tmp_path / "p", "--window", "3", "--segment-frames", "4", "-q"], capsys)
    assert rc == 130 and "(--no-resume starts afresh)" in err, err
    monkeypatch.setattr(upscale, "load_model", lambda *a, **k: fake_model)
    rc, err = run([src, tmp_path / "p", "--window", "3", "--segment-frames", "4", "--no-resume"], capsys)
    assert rc == 0 and "zsm-tf upscale: note: --no-resume: discarding" in err, err
    assert "upscale" in err and "frame/s" in err and "65/65" in err, err
