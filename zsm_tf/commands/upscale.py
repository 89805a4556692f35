"""zsm-tf upscale INPUT OUTPUT: 4x width and height, 2x frame rate, streamed.

INPUT is a video (anything FFmpeg reads) or a folder of images (sorted by name). OUTPUT is a
video file (H.264 yuv420p; by extension .mp4 .m4v .mov .mkv .avi, or VP9 .webm) or, without a
video extension (or ending in /), a folder of PNG frames. K input frames give 2K-1 output frames.

--fps-mode double (default) doubles the frame rate, so the duration is kept and the input's
audio track is copied; slowmo keeps the input rate (2x slow motion, audio dropped).

Interrupted runs resume: progress is committed every --segment-frames output frames (and at
least about every --segment-seconds) in
.OUTPUT.zsm-work/ beside the output; rerun the same command after Ctrl-C, SIGTERM, kill -9 or a
crash to continue (--no-resume starts afresh). Frames keep their input timestamps (new frames
midway); rotation, colour tags and audio/subtitle languages are kept. An existing output needs
--overwrite. A stream damaged part-way: the frames before the damage are written, then exit 1
(--strict: refuse before any work).

Weights: --weights FILE.weights.h5 (from 'zsm-tf convert-weights' or training; also a .keras
file or a training output dir), its architecture from --config or model_config.json (or
<name>.json) beside it; without --weights the shipped zsm_tf/weights/ are used.

Memory is bounded by --max-memory (default: 80% of the available memory, at most 5 GiB): big
frames are cut into tiles chosen to fit it (--tile S overrides), and a job that cannot fit stops
with one line before it starts. --window defaults to the window the weights were trained with
(model_config.json; 4 for train.py's and the authors' 7-frame clips).
"""
from __future__ import annotations

import sys
from fractions import Fraction

from zsm_tf.commands.common import (
    SETTING_FLAGS,
    add_debug_arg,
    add_model_args,
    build_upscaler,
    check_model_args,
    options_named,
    parser_for,
    quiet_tf,
    run_command,
    weights_path,
)
from zsm_tf.commands.progress import BarProgress
from zsm_tf.loading import load_model

PROG = "zsm-tf upscale"


def build_parser():
    from zsm_tf.pipeline.resume import DEFAULT_SEGMENT_FRAMES, DEFAULT_SEGMENT_SECONDS

    p = parser_for(PROG, __doc__)
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
    g = p.add_argument_group("output, resume and errors")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing output file, or a non-empty output folder (whole)")
    g.add_argument("--no-resume", action="store_true",
                   help="discard the progress of an earlier interrupted run of this output")
    g.add_argument("--segment-frames", type=int, default=DEFAULT_SEGMENT_FRAMES, metavar="N",
                   help=f"commit progress about every N output frames, rounded up to whole windows "
                        f"(default {DEFAULT_SEGMENT_FRAMES})")
    g.add_argument("--segment-seconds", type=float, default=DEFAULT_SEGMENT_SECONDS, metavar="S",
                   help=f"and at the first window boundary after S seconds of work on a segment "
                        f"(default {DEFAULT_SEGMENT_SECONDS:g}; 0: by frames only, so that segment "
                        f"ends, and hence a video's encoding, do not depend on the speed)")
    g.add_argument("--strict", action="store_true",
                   help="refuse a damaged input stream (default: upscale the frames before the "
                        "damage, then exit with an error naming the frame)")
    add_debug_arg(g)
    return p


def run(args) -> int:
    from zsm_tf.pipeline.video import VideoJob

    check_model_args(args)
    if not args.segment_seconds >= 0:
        raise ValueError(f"--segment-seconds must be 0 (off) or positive, got {args.segment_seconds:g}")
    weights = check_weights(args)   # every flag and path before the scan and the model
    progress = BarProgress(PROG, quiet=args.quiet, names=SETTING_FLAGS)
    with options_named():   # the library's errors and notes said with the options' names
        with VideoJob(args.input, args.output, fps=args.fps, fps_mode=args.fps_mode, crf=args.crf,
                      overwrite=args.overwrite, strict=args.strict, resume=not args.no_resume,
                      segment_frames=args.segment_frames, segment_seconds=args.segment_seconds or None,
                      progress=progress) as job:
            progress.note("loading the model (the first run also compiles the deformable-convolution op)")
            quiet_tf()
            model = load_model(weights, config=args.config)
            upscaler = build_upscaler(args, model, pipeline=True)
            res = job.run(upscaler, model=model, weights_path=weights)
    if not args.quiet:
        what = "video" if res.video else "PNG frames"
        rate = f"{float(res.rate):.3f} fps" + ("" if res.cfr else " nominal, variable")
        audio = "" if not res.audio else (f", audio re-encoded to {res.audio_codec}" if res.audio_codec
                                          else ", audio copied")
        print(f"wrote {res.output}: {res.frames} frames {res.width}x{res.height} at {rate} ({what}"
              f"{audio})", file=sys.stderr)
    if res.damage:
        print(f"{PROG}: error: {res.damage}; wrote {res.output} from the {job.num_inputs} frames "
              f"before it ({res.frames} output frames)", file=sys.stderr)
        return 1
    return 0


def check_weights(args):
    """The weights to load (``--weights`` or the shipped ones), their config found and read, or
    one line naming the flag; no TensorFlow."""
    from zsm_tf.loading import ModelLoadError, read_config, resolve_source

    try:
        weights = weights_path(args)
        read_config(resolve_source(weights, args.config))
    except ModelLoadError as e:
        flag = "--config" if args.config and args.config in str(e) else "--weights" if args.weights else None
        raise ModelLoadError(f"{flag}: {e}" if flag else str(e)) from None
    return weights


def main(argv=None) -> int:
    from zsm_tf import interrupts

    interrupts.set_context(grace=15.0)   # time to close the pipeline's threads after a signal
    return run_command(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
