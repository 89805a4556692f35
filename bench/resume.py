"""Benchmark of resuming ``zsm-tf upscale`` after ``kill -9``: how long the rerun takes next to
an uninterrupted run.

    python bench/resume.py                         # shipped weights, 41 frames of 128x96
    python bench/resume.py --kill-at 0.6 --frames 61 --size 160x96 --weights W.weights.h5

Generates a clip (a textured picture panning, with an AAC track), then runs the real command
(``python -m zsm_tf.cli upscale``, one process each, TensorFlow start-up included) three times:

1. uninterrupted, timed: ``full``;
2. again into another output, killed with SIGKILL as soon as ``--kill-at`` of the output frames
   are committed (read from the work folder's manifest);
3. the same command rerun after the kill, timed: ``rerun``;

then checks that run 3's output decodes to exactly the frames of run 1 and that no work folder is
left, and prints one JSON line with ``rerun / full``. The issue's bar: <= 0.7 at --kill-at 0.6.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def make_clip(path, k, w, h, fps=24):
    import av
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + k + 1, 3)).astype(np.uint8)
    big = np.asarray(Image.fromarray(small).resize((small.shape[1] * 8, small.shape[0] * 8), Image.BICUBIC))
    c = av.open(str(path), "w")
    v = c.add_stream("libx264", rate=fps)
    v.width, v.height, v.pix_fmt = w, h, "yuv420p"
    a = c.add_stream("aac", rate=44100)
    a.layout = "mono"
    for i in range(k):
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(big[:h, 3 * i:3 * i + w]), format="rgb24")
        f.pts = i
        c.mux(v.encode(f))
    c.mux(v.encode(None))
    s = (np.sin(np.arange(int(44100 * k / fps)) / 10) * 0.3).astype(np.float32)[None]
    for i in range(0, s.shape[1], 1024):
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(s[:, i:i + 1024]), format="fltp", layout="mono")
        af.sample_rate, af.pts = 44100, i
        c.mux(a.encode(af))
    c.mux(a.encode(None))
    c.close()


def committed_frames(work: Path) -> int:
    try:
        segs = json.loads((work / "manifest.json").read_text())["segments"]
        return segs[-1]["end"] if segs else 0
    except (OSError, ValueError, KeyError, IndexError):
        return 0


def decoded(path):
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="128x96", help="input WxH (default 128x96)")
    p.add_argument("--frames", type=int, default=41, help="input frames K (2K-1 outputs; default 41)")
    p.add_argument("--kill-at", type=float, default=0.6, help="fraction of output frames committed "
                                                               "before kill -9 (default 0.6)")
    p.add_argument("--window", type=int, default=4, help="--window of the runs (default 4)")
    p.add_argument("--segment-frames", type=int, default=12, help="--segment-frames (default 12)")
    p.add_argument("--weights", help=".weights.h5 (default: the shipped weights)")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    total = 2 * args.frames - 1
    with tempfile.TemporaryDirectory(prefix="zsm-resume-bench-") as d:
        d = Path(d)
        clip = d / "in.mp4"
        make_clip(clip, args.frames, w, h)

        def cmd(out):
            c = [sys.executable, "-m", "zsm_tf.cli", "upscale", str(clip), str(out), "-q",
                 "--window", str(args.window), "--segment-frames", str(args.segment_frames)]
            return c + (["--weights", args.weights] if args.weights else [])

        def timed(out):
            t0 = time.perf_counter()
            res = subprocess.run(cmd(out), cwd=ROOT, capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"run failed: {res.stderr.strip()}")
            return time.perf_counter() - t0

        full = timed(d / "full.mp4")
        out = d / "resumed.mp4"
        work = d / f".{out.name}.zsm-work"
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while committed_frames(work) < args.kill_at * total:
            if proc.poll() is not None:
                sys.exit(f"finished before the kill: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_after = time.perf_counter() - t0
        done = committed_frames(work)
        rerun = timed(out)
        a, b = decoded(d / "full.mp4"), decoded(out)
        same = len(a) == len(b) == total and all(np.array_equal(x, y) for x, y in zip(a, b))
        left = sorted(p.name for p in d.iterdir() if p.name.startswith("."))
    result = {"bench": "resume", "size": f"{w}x{h}", "frames_in": args.frames, "frames_out": total,
              "window": args.window, "segment_frames": args.segment_frames,
              "weights": args.weights or "shipped", "full_s": round(full, 2),
              "killed_after_s": round(killed_after, 2), "committed_at_kill": done,
              "committed_fraction": round(done / total, 3), "rerun_s": round(rerun, 2),
              "rerun_over_full": round(rerun / full, 3), "identical_frames": same,
              "work_folder_left": left, "cpus": os.cpu_count(),
              "load_avg": [round(x, 2) for x in os.getloadavg()]}
    print(f"full run {full:.1f} s; killed (-9) at {done}/{total} frames committed; rerun {rerun:.1f} s "
          f"= {rerun / full:.2f}x the full run; frames identical: {same}")
    print(json.dumps(result))
    return 0 if same and not left else 1


if __name__ == "__main__":
    sys.exit(main())
