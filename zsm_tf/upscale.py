"""zsm-tf upscale INPUT OUTPUT: 4x width and height, 2x frame rate, streamed.

INPUT is a video (anything FFmpeg reads) or a folder of images (sorted by name). OUTPUT is a
video file (H.264 yuv420p; by extension .mp4 .m4v .mov .mkv .avi, or VP9 .webm) or, without a
video extension (or ending in /), a folder of PNG frames. K input frames give 2K-1 output frames.

--fps-mode double (default) doubles the frame rate, so the duration is kept and the input's
audio track is copied; slowmo keeps the input rate (2x slow motion, audio dropped).

Interrupted runs resume: progress is committed every --segment-frames output frames in
.OUTPUT.zsm-work/ beside the output; rerun the same command after Ctrl-C, SIGTERM, kill -9 or a
crash to continue (--no-resume starts afresh). Frames keep their input timestamps (new frames
midway); rotation, colour tags and audio/subtitle languages are kept. An existing output needs
--overwrite. A stream damaged part-way: the frames before the damage are written, then exit 1
(--strict: refuse before any work).

Weights: --weights FILE.weights.h5 (from 'zsm-tf convert-weights' or training), its architecture
from --config or model_config.json (or <name>.json) beside it; without --weights the
shipped zsm_tf/weights/ are used.

Memory is bounded by --max-memory (default: 80% of the available memory, at most 5 GiB): big
frames are cut into tiles chosen to fit it (--tile S overrides), and a job that cannot fit stops
with one line before it starts. --window defaults to the window the weights were trained with
(model_config.json; 4 for train.py's and the authors' 7-frame clips).
"""
from __future__ import annotations

import argparse
import os
import sys
from fractions import Fraction
from pathlib import Path

from zsm_tf.loading import CONFIG_NAME, ModelLoadError  # one error type for every model loader

PROG = "zsm-tf upscale"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def default_weights() -> Path:
    """The shipped ``zsm_tf/weights/*.weights.h5``, or :class:`ModelLoadError`."""
    found = sorted(WEIGHTS_DIR.glob("*.weights.h5")) if WEIGHTS_DIR.is_dir() else []
    if not found:
        raise ModelLoadError(f"no shipped weights in {WEIGHTS_DIR}; pass --weights PATH (a .weights.h5 "
                             f"from 'zsm-tf convert-weights' or from training)")
    if len(found) > 1:
        raise ModelLoadError(f"several weight files in {WEIGHTS_DIR} ({', '.join(p.name for p in found)}); "
                             f"pick one with --weights")
    return found[0]


def load_model(weights=None, config=None):
    """A ZoomingSlowMo with ``weights`` (a ``.weights.h5``; default: the shipped ones), its
    architecture from ``config`` (a JSON file) or the ``model_config.json`` beside the weights
    (see :func:`zsm_tf.loading.load_model`)."""
    from zsm_tf import loading

    weights = Path(weights) if weights else default_weights()
    if not weights.is_file():
        raise ModelLoadError(f"{weights}: no such weights file")
    if not str(weights).endswith(".weights.h5"):
        raise ModelLoadError(f"{weights}: weights must be a .weights.h5 file "
                             f"(convert the authors' .pth with 'zsm-tf convert-weights')")
    return loading.load_model(weights, config=config)


def quiet_tf() -> None:
    """Imports TensorFlow without its start-up log lines (see :mod:`zsm_tf.quiet`)."""
    from zsm_tf.quiet import quiet_tf as _quiet

    _quiet()


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--weights", help="a .weights.h5 file (default: the shipped zsm_tf/weights/)")
    g.add_argument("--config", help=f"JSON of ZoomingSlowMo arguments (default: {CONFIG_NAME} beside "
                                    "the weights, or <name>.json)")
    g.add_argument("--window", type=int, help="input frames per model call (default: the window the "
                                              "weights were trained with, from model_config.json; 4)")
    g.add_argument("--tile", type=int, help="split frames into SxS tiles (input pixels, multiple of 4) "
                                            "blended over their overlap (default: chosen from "
                                            "--max-memory)")
    g.add_argument("--tile-overlap", type=int, help="tile overlap in input pixels (default tile/4; "
                                                    "16 for automatic tiles)")
    g.add_argument("--max-memory", help="memory budget, e.g. 6G or 800M (default: 80%% of the "
                                        "available memory, at most 5 GiB)")
    g.add_argument("--precision", choices=("float32", "bfloat16", "auto"), default="auto",
                   help="compute precision (default auto: bfloat16 where the CPU/GPU has it and the "
                        "weights' recorded quality cost is at most 0.05 dB, else float32)")
    g.add_argument("--batch", type=int, default=1, help="tiles (x flips) per model call (default 1)")
    g.add_argument("--self-ensemble", action="store_true",
                   help="average the outputs of the 4 flips (4x slower, slightly better)")


def build_upscaler(args, model, pipeline=False):
    from zsm_tf.inference import DEFAULT_WINDOW, SpaceTimeUpscaler, trained_settings
    from zsm_tf.memory import parse_size

    trained = trained_settings(getattr(args, "weights", None), getattr(args, "config", None))
    window = args.window or int(trained.get("window", DEFAULT_WINDOW))
    max_memory = getattr(args, "max_memory", None)
    return SpaceTimeUpscaler(model, window=window, tile=args.tile or "auto", overlap=args.tile_overlap,
                             self_ensemble=args.self_ensemble, batch=args.batch,
                             precision=getattr(args, "precision", "float32"),
                             bf16_cost_db=trained.get("bf16_psnr_cost_db"),
                             max_memory=parse_size(max_memory) if max_memory else None,
                             pipeline=pipeline)


def check_model_args(args) -> None:
    if args.window is not None and args.window < 2:
        raise ValueError(f"--window must be at least 2, got {args.window}")
    if args.tile is not None and (args.tile < 16 or args.tile % 4):
        raise ValueError(f"--tile must be a multiple of 4 and at least 16, got {args.tile}")
    if args.tile_overlap is not None:
        if args.tile is None:
            raise ValueError("--tile-overlap needs --tile")
        if not 0 <= args.tile_overlap < args.tile or args.tile_overlap % 4:
            raise ValueError(f"--tile-overlap must be a multiple of 4 in [0, tile), got {args.tile_overlap}")
    if args.batch < 1:
        raise ValueError(f"--batch must be at least 1, got {args.batch}")


def add_output_args(p: argparse.ArgumentParser) -> None:
    from zsm_tf.resume import DEFAULT_SEGMENT_FRAMES

    g = p.add_argument_group("output, resume and errors")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing output file, or a non-empty output folder (whole)")
    g.add_argument("--no-resume", action="store_true",
                   help="discard the progress of an earlier interrupted run of this output")
    g.add_argument("--segment-frames", type=int, default=DEFAULT_SEGMENT_FRAMES, metavar="N",
                   help=f"commit progress about every N output frames, rounded up to whole windows "
                        f"(default {DEFAULT_SEGMENT_FRAMES})")
    g.add_argument("--strict", action="store_true",
                   help="refuse a damaged input stream (default: upscale the frames before the "
                        "damage, then exit with an error naming the frame)")
    g.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow's log")


def check_output_args(args) -> None:
    if args.segment_frames < 1:
        raise ValueError(f"--segment-frames must be at least 1, got {args.segment_frames}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("input", help="video file or folder of images")
    p.add_argument("output", help="video file (.mp4 .mkv .mov .avi .m4v .webm) or folder for PNG frames")
    p.add_argument("--fps-mode", choices=("double", "slowmo"), default="double",
                   help="double: 2x frame rate, same duration, audio kept (default); "
                        "slowmo: same frame rate, 2x slow motion, no audio")
    p.add_argument("--fps", type=Fraction, help="input frame rate for an image folder (default 25), "
                                                "or to override a video's")
    p.add_argument("--crf", type=int, default=18, help="video quality (x264 CRF, lower is better; default 18)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes")
    add_model_args(p)
    add_output_args(p)
    return p


def _err(msg) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def _note(args, msg) -> None:
    if not args.quiet:
        print(f"{PROG}: note: {msg}", file=sys.stderr)


def run(args) -> int:
    from zsm_tf import upscale_job as job
    from zsm_tf import video_io as vio
    from zsm_tf.resume import ResumableOutput, plan_segments, produce
    from zsm_tf.segments import SegmentEncoder, container_format
    from zsm_tf.timing import output_timing

    check_model_args(args)
    check_output_args(args)
    if args.fps is not None and args.fps <= 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    src = vio.open_source(args.input, fps=args.fps)
    try:
        info = src.info
        vio.check_output_path(args.output, args.input)
        job.check_overwrite(args.output, args.overwrite)
        facts = job.inspect_input(src, progress=not args.quiet)   # before any work
        n_in = facts.num_frames
        if n_in < 2:
            why = f" ({facts.damage})" if facts.damage else ""
            raise vio.MediaError(f"{args.input}: has {n_in} frame{'s' if n_in != 1 else ''}; "
                                 f"need at least 2 to interpolate{why}")
        if facts.damage and args.strict:
            raise vio.MediaError(f"{facts.damage}; nothing written (--strict)")
        if facts.damage:
            _note(args, f"{facts.damage}: upscaling the {n_in} frames before it, then exiting with an error")
        is_video = vio.is_video_path(args.output)
        timing, tnote = output_timing(info.fps, args.fps_mode,
                                      None if args.fps is not None else facts.pts, facts.time_base)
        if is_video and not timing.cfr and vio.container_of(args.output) == "avi":
            timing, _ = output_timing(info.fps, args.fps_mode)
            tnote = (f"variable frame rate input, but AVI holds a constant rate only: written at "
                     f"{float(timing.rate):.3f} fps (use .mp4 or .mkv to keep the input's timing)")
        if tnote and is_video:
            _note(args, tnote)
        audio = None
        if info.has_audio:
            if args.fps_mode == "double" and is_video:
                audio = info.path
            elif args.fps_mode == "slowmo":
                _note(args, "audio dropped: in slowmo mode it would be out of sync")
            else:
                _note(args, "audio dropped: the output is a folder of frames")

        _note(args, "loading the model (the first run also compiles the deformable-convolution op)")
        quiet_tf()
        model = load_model(args.weights, args.config)
        upscaler = build_upscaler(args, model, pipeline=True)
        upscaler.plan(info.height, info.width)   # a job that cannot fit the memory stops here
        try:
            weights_path = Path(args.weights) if args.weights else default_weights()
        except ModelLoadError:
            weights_path = None
        record = job.job_record(args, n_in, upscaler.window, args.segment_frames, model, weights_path)
        work = ResumableOutput(args.output, record, video=is_video, resume=not args.no_resume,
                               note=lambda m: _note(args, m))
        w, h = info.width * 4, info.height * 4
        plan = plan_segments(n_in, upscaler.window, args.segment_frames)
        total = plan[-1].end
        fmt = container_format(args.output) if is_video else None

        def encoder(seg):
            return SegmentEncoder(work.segment_path(seg), fmt, w, h, timing.rate, timing.time_base,
                                  crf=args.crf, colour=facts.colour)

        from tqdm import tqdm

        notes = []
        try:
            with job.sigterm_as_interrupt():
                with tqdm(total=total, initial=work.done_frames, unit="frame", desc="upscale",
                          disable=args.quiet, dynamic_ncols=True, file=sys.stderr) as bar:
                    produce(work, plan, upscaler, src, n_in, timing, encoder, lambda: bar.update(1),
                            status=bar.set_description)
                if is_video:
                    starts = {s.index: timing.seconds(s.start) for s in plan}
                    notes = work.publish_video(starts, fmt, rotation=facts.rotation, streams_from=audio)
                else:
                    work.publish_frames()
        except BaseException as e:
            keep = bool(work.done) and not isinstance(e, (vio.MediaError, ModelLoadError, ValueError))
            if keep:
                e.resume_hint = (f"{work.done_frames} of {total} output frames are kept in {work.path}: "
                                 f"run the same command again to resume (--no-resume starts afresh)")
                work.release()
            else:
                work.remove()
            raise
        for n in notes:
            _note(args, n)
        if not args.quiet:
            what = "video" if is_video else "PNG frames"
            rate = f"{float(timing.rate):.3f} fps" + ("" if timing.cfr else " nominal, variable")
            print(f"wrote {args.output}: {total} frames {w}x{h} at {rate} ({what}"
                  f"{', audio copied' if audio else ''})", file=sys.stderr)
        if facts.damage:
            _err(f"{facts.damage}; wrote {args.output} from the {n_in} frames before it "
                 f"({total} output frames)")
            return 1
        return 0
    finally:
        src.close()


def main(argv=None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:   # --help (0) or a usage error (2, message printed by argparse)
        return int(e.code or 0)
    from zsm_tf.upscale_job import Terminated
    from zsm_tf.video_io import MediaError

    if args.debug:
        os.environ["ZSM_TF_DEBUG"] = "1"
    try:
        return run(args)
    except (MediaError, ModelLoadError, ValueError) as e:
        _err(e)
    except KeyboardInterrupt as e:
        hint = getattr(e, "resume_hint", None)
        _err(("terminated" if isinstance(e, Terminated) else "interrupted") + (f"; {hint}" if hint else ""))
        return 143 if isinstance(e, Terminated) else 130
    except MemoryError:
        _err("out of memory; lower --max-memory (smaller tiles) or use --tile (e.g. --tile 128)")
    except OSError as e:
        _err(f"{e.filename + ': ' if getattr(e, 'filename', None) else ''}{e.strerror or e}")
    except Exception as e:  # no traceback for the user; ZSM_TF_DEBUG=1 shows it
        if os.environ.get("ZSM_TF_DEBUG"):
            raise
        if type(e).__name__ == "ResourceExhaustedError":
            _err("out of memory; lower --max-memory (smaller tiles) or use --tile (e.g. --tile 128)")
            return 1
        msg = (str(e).strip().splitlines() or [""])[0][:300]
        _err(f"unexpected {type(e).__name__}: {msg} (set ZSM_TF_DEBUG=1 for the traceback)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
