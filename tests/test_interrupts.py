"""Ctrl-C and SIGTERM at any moment of ``zsm-tf upscale`` (start-up, model load, the first
window's trace, the run): exit 130 / 143 with one "interrupted" / "terminated" line and what to
do next, never a C++ abort (134) or a traceback. Real signals to a real subprocess running a
tiny ZoomingSlowMo (saved in ``tmp_path``)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_upscale import tiny_model
from test_video_io import make_video

from zsm_tf.pipeline.resume import work_dir_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    m = tiny_model()
    m.save_weights(str(d / "tiny.weights.h5"))
    (d / "model_config.json").write_text(json.dumps(m.get_config()))
    return d / "tiny.weights.h5"


class Watched:
    """A subprocess whose stderr is collected as it comes (progress bars use '\\r')."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.err = b""
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        while True:
            b = self.proc.stderr.read1(4096)
            if not b:
                return
            self.err += b

    def wait_for(self, text, timeout=180):
        t0 = time.time()
        while text.encode() not in self.err:
            assert self.proc.poll() is None, f"ended before {text!r}: {self.text()}"
            assert time.time() - t0 < timeout, f"no {text!r} after {timeout} s: {self.text()}"
            time.sleep(0.005)

    def stop(self, sig, timeout=120):
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self._t.join(10)
        return rc, self.text()

    def text(self):
        return self.err.decode(errors="replace")


def last_line(err):
    return err.replace("\r", "\n").strip().splitlines()[-1]


@pytest.mark.parametrize("moment, sig", [
    ("start-up", signal.SIGTERM),
    ("load", signal.SIGINT),
    ("trace", signal.SIGINT),
    ("trace", signal.SIGTERM),
])
def test_signal_at_any_moment_ends_130_or_143(tmp_path, tiny, moment, sig):
    src = make_video(tmp_path / "in.mp4", 9, w=64, h=48, fps=24)
    out = tmp_path / "out.mp4"
    w = Watched([sys.executable, "-m", "zsm_tf.cli", "upscale", str(src), str(out), "--weights",
                 str(tiny), "--window", "3", "--segment-frames", "4"])
    if moment == "start-up":
        time.sleep(0.3)
    elif moment == "load":
        w.wait_for("loading the model")
    else:
        w.wait_for("tracing")
    rc, err = w.stop(sig)
    want = 130 if sig == signal.SIGINT else 143
    assert rc == want, f"exit {rc}: {err}"
    assert "terminate called" not in err and "Traceback" not in err and "FATAL" not in err, err
    line = last_line(err)
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    assert line.startswith(f"zsm-tf upscale: error: {word}") and "run the same command" in line, err
    assert not out.exists()
    assert not work_dir_for(out).exists()     # nothing was committed: nothing kept


def test_train_interrupted_while_tracing(tmp_path):
    """train.py traces its step in the main thread: Ctrl-C there ends 130 with the resume hint."""
    cmd = [sys.executable, "train.py", "--config", "configs/smoke.yaml", "--output-dir", str(tmp_path / "run"),
           "--steps", "3"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = []
    t = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    t.start()
    t0 = time.time()
    while not any(b"traces the graph" in ln for ln in out):
        assert proc.poll() is None and time.time() - t0 < 300, b"".join(out) + proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=120)
    err = proc.stderr.read().decode()
    assert rc == 130, err
    assert "terminate called" not in err and "Traceback" not in err, err
    line = last_line(err)
    assert line.startswith("train.py: error: interrupted; run the same command again to resume"), err
    assert b"Building the model" in b"".join(out)    # said what it does before the silent part


def test_a_swallowed_interrupt_still_ends_the_command_130_or_143(monkeypatch, capsys):
    """A signal whose exception C code swallowed (a SystemError from ``__import__`` under
    ``tf.nest``) still ends the command with its status and line; loops re-raise it."""
    import argparse

    from zsm_tf import interrupts
    from zsm_tf.commands.common import run_command

    for key, value in (("installed", True), ("handled", True), ("acked", False),
                       ("signum", signal.SIGTERM)):
        monkeypatch.setitem(interrupts._state, key, value)

    def exit_now(status):
        raise SystemExit(status)
    monkeypatch.setattr(interrupts, "exit_now", exit_now)
    with pytest.raises(interrupts.Terminated):
        interrupts.raise_pending()
    with pytest.raises(SystemExit) as e:
        run_command("zsm-tf x", argparse.ArgumentParser(), lambda args: 0, [],
                    interrupt_hint=lambda args: "run the same command again")
    assert e.value.code == 143
    assert "zsm-tf x: error: terminated; run the same command again" in capsys.readouterr().err
    assert interrupts.pending() is None   # acknowledged
    interrupts.raise_pending()            # nothing pending: no raise
    monkeypatch.setitem(interrupts._state, "handled", False)
    monkeypatch.setitem(interrupts._state, "acked", False)
    with interrupts.deferred():           # recorded, not raised, inside deferred()
        interrupts._handler(signal.SIGINT, None)
    assert interrupts.pending() == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        interrupts.raise_pending()
