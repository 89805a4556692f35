"""Benchmark of `zsm-tf upscale`: today's code against an older commit, in one run.

    python bench/upscale.py                                   # old (37c1d88) vs new, 3 sizes
    python bench/upscale.py --sizes 320x180 --frames 13 --new-args "--precision bfloat16"
    python bench/upscale.py --no-old --sizes 640x480          # this checkout only

For every input size, a generated clip (a textured picture panning; ``--frames`` frames, H.264
CRF 0) is upscaled to an .mp4 by the whole command, `python -m zsm_tf.cli upscale IN OUT`, with
its default flags and the shipped weights (the default model), each run in a fresh process:

* **new**: this checkout;
* **old**: the same command in a checkout of ``--old-commit`` (``git worktree add`` into a
  temporary folder, removed at the end), whose defaults were ``--window 7``, whole frames,
  float32, the reconstruction of all 2N-1 frames at once. The old code needs about 20 GB at
  640x480 and more at 1280x720 (it is killed there), so by default it only runs at sizes of at
  most ``--old-max-pixels`` (320x240) and the others are reported as not run.

Reported per run: wall time of the command (model loading, tracing and the first window
included: what a user waits for), seconds per output frame (wall / outputs), the CPU seconds
the process used (less sensitive than wall time to other load on a shared machine), and the
peak RSS of the process (``ru_maxrss`` of the child, measured by the child itself). Runs are one after
the other, never two at once. Prints a table, the new/old time ratio per size and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

CHILD = """
import json, os, resource, sys, time
t0 = time.perf_counter()
if os.path.exists(os.path.join("zsm_tf", "commands", "upscale.py")):
    from zsm_tf.commands import upscale
else:   # code before the commands/ layout (e.g. 37c1d88)
    from zsm_tf import upscale
rc = upscale.main(sys.argv[1:])
ru = resource.getrusage(resource.RUSAGE_SELF)
print("BENCH " + json.dumps({"rc": rc, "wall_s": time.perf_counter() - t0,
      "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss": ru.ru_maxrss * 1024}))
"""


def frames(k, w, h, seed=0):
    """K frames of a smooth random texture panning 3 pixels per frame, uint8 [h, w, 3]."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + k + 1, 3)).astype(np.uint8)
    from PIL import Image

    big = np.asarray(Image.fromarray(small).resize((small.shape[1] * 8, small.shape[0] * 8), Image.BICUBIC))
    for i in range(k):
        yield np.ascontiguousarray(big[:h, 3 * i:3 * i + w])


def make_clip(path, k, w, h):
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = w, h, "yuv444p"
        st.options = {"crf": "0"}
        for f in frames(k, w, h):
            for pkt in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def run_cli(checkout, clip, out, extra, env_extra=()):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(checkout)}
    env.update(kv.split("=", 1) for kv in env_extra)
    cmd = [sys.executable, "-c", CHILD, str(clip), str(out), "-q", *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("BENCH ")]
    if not line:
        tail = (res.stderr.strip().splitlines() or [""])[-1][:200]
        return {"rc": res.returncode, "wall_s": time.perf_counter() - t0, "peak_rss": None,
                "error": tail or f"killed (status {res.returncode})"}
    r = json.loads(line[0][6:])
    if r["rc"]:
        r["error"] = (res.stderr.strip().splitlines() or [""])[-1][:200]
    return r


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="320x180,640x480,1280x720", help="input sizes WxH, comma-separated")
    p.add_argument("--frames", default="13,4,2",
                   help="input frames per size (one number, or one per size; default 13,4,2)")
    p.add_argument("--old-commit", default="37c1d88")
    p.add_argument("--no-old", action="store_true", help="only this checkout")
    p.add_argument("--old-max-pixels", type=int, default=320 * 240,
                   help="run the old code only up to this many input pixels (default 320x240: "
                        "it needs ~20 GB at 640x480)")
    p.add_argument("--old-args", default="", help="extra flags for the old command")
    p.add_argument("--new-args", default="", help="extra flags for the new command, e.g. "
                                                  "'--precision bfloat16'")
    p.add_argument("--old-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment of the old command, e.g. TF_ENABLE_ONEDNN_OPTS=0 (what TF "
                        "does by itself on an AVX2-only CPU)")
    p.add_argument("--new-env", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    ks = [int(v) for v in args.frames.split(",")]
    ks = ks * len(sizes) if len(ks) == 1 else ks
    if len(ks) != len(sizes):
        sys.exit("bench: --frames needs one number or one per size")

    tmp = Path(tempfile.mkdtemp(prefix="zsm_bench_"))
    old = None
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # clean up the worktree on kill
    try:
        if not args.no_old:
            old = tmp / "old"
            subprocess.run(["git", "worktree", "add", "--detach", str(old), args.old_commit],
                           cwd=ROOT, check=True, capture_output=True)
            # the shipped weights are git-tracked there too; the compiled op is shared via its cache
        rows = []
        for (w, h), k in zip(sizes, ks):
            clip = tmp / f"in_{w}x{h}.mkv"
            make_clip(clip, k, w, h)
            runs = [("new", ROOT, shlex.split(args.new_args), args.new_env)]
            if old is not None:
                runs.insert(0, ("old", old, shlex.split(args.old_args), args.old_env))
            for name, checkout, extra, env_extra in runs:
                row = {"code": name, "input": f"{w}x{h}", "output": f"{4 * w}x{4 * h}",
                       "frames_in": k, "frames_out": 2 * k - 1,
                       "flags": " ".join(list(env_extra) + extra) or "(defaults)"}
                if name == "old" and w * h > args.old_max_pixels:
                    row["error"] = "not run: needs ~20 GB or more (killed at 640x480 with 24 GB)"
                else:
                    out = tmp / f"out_{name}_{w}x{h}.mp4"
                    row.update(run_cli(checkout, clip, out, extra, env_extra))
                    if out.exists():
                        out.unlink()
                    if row.get("peak_rss") and not row.get("error"):
                        row["s_per_output_frame"] = row["wall_s"] / row["frames_out"]
                rows.append(row)
                print(f"{name:>4} {row['input']:>9} -> {row['output']:<9} {k:>2} -> {2 * k - 1:>2} frames  "
                      + (f"{row['wall_s']:7.1f} s  {row['s_per_output_frame']:6.2f} s/frame  "
                         f"CPU {row['cpu_s']:7.1f} s  peak RSS {row['peak_rss'] / 2**30:5.2f} GiB"
                         if "s_per_output_frame" in row
                         else row.get("error", "")), flush=True)
        print()
        for (w, h), _ in zip(sizes, ks):
            by = {r["code"]: r for r in rows if r["input"] == f"{w}x{h}" and "s_per_output_frame" in r}
            if "old" in by and "new" in by:
                print(f"{w}x{h}: new/old time {by['new']['wall_s'] / by['old']['wall_s']:.2f}x, "
                      f"CPU time {by['new']['cpu_s'] / by['old']['cpu_s']:.2f}x, "
                      f"peak RSS {by['new']['peak_rss'] / by['old']['peak_rss']:.2f}x")
        import platform

        print(json.dumps({"rows": rows, "old_commit": args.old_commit, "cpu_count": os.cpu_count(),
                          "machine": platform.machine(),
                          "load_avg_at_end": os.getloadavg()}, default=str))
    finally:
        if old is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
