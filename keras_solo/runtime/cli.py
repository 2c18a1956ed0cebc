"""`keras-solo-runtime`: run exported models (.tflite, .onnx) without TensorFlow.

    keras-solo-runtime predict MODEL --source IMAGE|DIR|VIDEO --out DIR [--score 0.3]
    keras-solo-runtime track MODEL --source VIDEO|DIR|CAMERA|URL --out DIR [--live]
    keras-solo-runtime benchmark MODEL [--threads N] [--warmup W] [--runs R] [--json OUT]
        [--compare PEER.onnx ... [--rounds 3]]

Imports numpy, cv2 and the model's runtime (ai-edge-litert for .tflite,
onnxruntime for .onnx) only: `pip install keras-solo[runtime]` is enough.
Bad input prints one line, ``error: <file>: <problem>``, and exits with code 2.
"""

import argparse
import os
import sys

from keras_solo.errors import SoloError, check_output, interrupt_on_sigterm, printable_paths, write_json
from keras_solo.runtime import bench
from keras_solo.runtime.engine import open_engine
from keras_solo.runtime.image import read_image
from keras_solo.runtime.sources import list_sources, prepare_out_dir, progress_bar


def build_parser(prog="keras-solo-runtime"):
    parser = argparse.ArgumentParser(prog=prog, description="Run keras-solo exports (.tflite / .onnx) "
                                     "without TensorFlow.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("predict", help="overlays + detections.json for an image, a folder or a video")
    p.add_argument("model", help=".tflite or .onnx file (with its MODEL.json sidecar)")
    p.add_argument("--source", required=True, help="image, folder of images, or video")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the sidecar's, else 2)")
    p.add_argument("--score", type=float, default=0.3, help="keep detections above this score")
    p.add_argument("--limit", type=int, default=0, help="only the first N images / frames")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")
    p = sub.add_parser("track", help="tracked instances (stable IDs) of a video, a camera or a stream, live")
    p.add_argument("model", help=".tflite or .onnx file (with its MODEL.json sidecar)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the sidecar's, else 2)")
    add_track_arguments(p)
    p = sub.add_parser("benchmark", help="latency, FPS, peak RSS, model size")
    p.add_argument("model", help=".tflite or .onnx file (with its MODEL.json sidecar)")
    add_timing_arguments(p, threads=None)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    return parser


def add_track_arguments(parser):
    """The `track` options of both commands (keras-solo track, keras-solo-runtime track)."""
    parser.add_argument("--source", required=True,
                        help="video file, folder of frames, camera index (0) or stream URL (rtsp://, http://)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--live", action="store_true",
                        help="read a file as a live camera: at its frame rate, stale frames dropped")
    parser.add_argument("--score", type=float, default=0.1,
                        help="detections above this reach the tracker (its second stage uses 0.1-0.5)")
    parser.add_argument("--high-thr", type=float, default=None,
                        help="tracker: detections from this score on enter its first stage (default 0.5, ByteTrack's)")
    parser.add_argument("--new-thr", type=float, default=None,
                        help="tracker: an unmatched detection from this score on starts a track (default 0.6)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N frames")
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")


def tracker_of(args):
    """The `Tracker` of the track options (ByteTrack's defaults where one is not given)."""
    from keras_solo.runtime.track import Tracker

    options = {name: getattr(args, name, None) for name in ("high_thr", "new_thr")}
    options = {name: value for name, value in options.items() if value is not None}
    try:
        return Tracker(**options)
    except ValueError as e:
        raise SoloError(f"--high-thr / --new-thr: {e}") from None


def add_timing_arguments(parser, threads):
    """The options of a benchmark, shared with `keras-solo benchmark`."""
    parser.add_argument("--threads", type=int, default=threads,
                        help="CPU threads" + (f" (default {threads})" if threads else " (default: the sidecar's, else 2)"))
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument("--runs", type=int, default=50, help="timed calls (per model and round with --compare)")
    parser.add_argument("--source", default=None, help="image to time on (default: a fixed random image)")
    parser.add_argument("--score", type=float, default=0.3, help="decode detections above this score (as predict)")
    parser.add_argument("--compare", nargs="+", default=None, metavar="PEER.onnx",
                        help="interleave rounds of this model's whole call with these ONNX peers (network only) "
                             "and print the ratio per round")
    parser.add_argument("--rounds", type=int, default=3, help="with --compare: number of interleaved rounds")


def check_json_output(path, overwrite):
    """Before any timing: an earlier --json result is kept unless `overwrite`."""
    if path:
        check_output(path, folder=False, option="--json")
        if os.path.exists(path) and not overwrite:
            raise SoloError(f"{path}: already exists; use --overwrite or another --json")


def check_timing_arguments(args):
    if args.runs < 1 or args.warmup < 0 or args.rounds < 1:
        raise SoloError("--runs and --rounds must be >= 1, --warmup >= 0")
    for peer in args.compare or ():
        if not os.path.isfile(peer):
            raise SoloError(f"{peer}: no such peer model file")
        if not peer.lower().endswith(".onnx"):
            raise SoloError(f"{peer}: --compare times .onnx peers (onnxruntime)")


def run_benchmark(engine, args):
    """`benchmark` or, with --compare, `compare`, printed; the result dict."""
    image = read_image(args.source) if args.source else None
    if args.compare:
        result = bench.compare(engine, args.compare, image, rounds=args.rounds, warmup=args.warmup, runs=args.runs,
                               min_score=args.score)
        print(bench.format_compare(result))
    else:
        result = bench.benchmark(engine, image, warmup=args.warmup, runs=args.runs, min_score=args.score)
        print(bench.format_benchmark(result))
    return result


def predict_command(engine_factory, args, *, progress=False):
    """Checks the source and --out before the engine is made, then predicts (`stream.predict_source`:
    capture, inference and output overlapped); a video's run ends with the stream report."""
    from keras_solo.runtime.stream import StreamSource, format_stream_report, predict_source

    kind, sources = list_sources(args.source)
    prepare_out_dir(args.out, args.overwrite, kind, sources)
    source = StreamSource(args.source, limit=args.limit)
    try:
        engine = engine_factory()
    except BaseException:
        source.close()
        raise
    total = min(source.frame_count, args.limit) if args.limit and source.frame_count else source.frame_count
    bar = progress_bar(total, "predict", "img" if kind == "images" else "frame", progress)
    try:
        result = predict_source(engine, source, args.out, score_thr=args.score, progress=lambda: bar.update(1))
    finally:
        bar.close()
    records, times = result["records"], result["times"]
    if kind == "video":
        print(format_stream_report(result))
    fps = len(times) / sum(times) if sum(times) > 0 else 0.0
    count = sum(len(r["instances"]) for r in records)
    print(f"predicted {len(records)} {'images' if kind == 'images' else 'frames'} ({count} instances, "
          f"{fps:.1f} FPS); overlays and detections.json in {args.out}")
    return records


def track_command(engine_factory, args, *, progress=False):
    """Opens the source and checks --out before the engine is made, then tracks (`stream.track_source`)."""
    from keras_solo.runtime.stream import StreamSource, format_stream_report, track_source

    tracker = tracker_of(args)
    source = StreamSource(args.source, live=args.live, limit=args.limit)
    try:
        prepare_out_dir(args.out, args.overwrite, "images" if source.paths is not None else "stream",
                        source.paths or [])
        engine = engine_factory()
    except BaseException:
        source.close()
        raise
    bar = progress_bar(source.frame_count if not source.live else 0, "track", "frame", progress)
    try:
        result = track_source(engine, source, args.out, tracker=tracker, score_thr=args.score,
                              progress=lambda: bar.update(1))
    finally:
        bar.close()
    print(format_stream_report(result))
    print(f"tracked {result['frames']} frames ({result['tracks']} tracks); overlays, tracks.json and "
          f"tracks_mot.txt in {args.out}")
    if result["frames"] and not result["tracks"]:
        print(f"no track started: no detection scored {tracker.config.new_thr} (--new-thr) where no track was; "
              "a model that scores lower needs lower --high-thr / --new-thr")
    return result


def main(argv=None):
    printable_paths()
    interrupt_on_sigterm()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        if args.command == "predict":
            predict_command(lambda: open_engine(args.model, args.threads), args)
        elif args.command == "track":
            track_command(lambda: open_engine(args.model, args.threads), args)
        else:
            check_json_output(args.json, args.overwrite)
            check_timing_arguments(args)
            result = run_benchmark(open_engine(args.model, args.threads), args)
            if args.json:
                write_json(args.json, result, what="benchmark results")
    except SoloError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
