"""The `keras-solo` command.

Every sub-command has `--help`. Bad input prints one line
(``error: <file>: <problem>``) and exits with code 2; `--debug` shows the
traceback instead.
"""

import argparse
import gc
import os
import sys

from keras_solo.errors import SoloError, check_output, interrupt_on_sigterm, printable_paths
from keras_solo.runtime.formats import FORMATS, QUANTS


# What `pip install keras-solo[train]` adds to the runtime's numpy + cv2.
TRAINING_MODULES = ("tensorflow", "keras", "yaml", "pycocotools", "tqdm", "matplotlib", "tensorboard")


def _size(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH like 1344x672, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return (w, h)


def _classes(text):
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of class names")
    return names


# What TensorFlow 2.21 prints on import whatever TF_CPP_MIN_LOG_LEVEL says (its absl logging
# starts before the variable is read, tensorflow#100442): nothing a user can act on.
STARTUP_NOISE = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on",
                 "This TensorFlow binary is optimized", "To enable the following instructions")


def _quiet_tf():
    """Imports Keras (and its backend) with their start-up log lines held back; any other line
    printed meanwhile (a Python warning, an import error) is passed on."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import keras  # noqa: F401
        except ImportError:
            pass  # the command reports what is missing (TRAINING_MODULES)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not any(noise in line for noise in STARTUP_NOISE)))
            sys.stderr.flush()


# ---------------------------------------------------------------------------
# Sub-commands (imports are lazy so `--help` and data tools start fast)

def cmd_make_synthetic(args):
    from keras_solo.data.synthetic import make_synthetic

    check_output(args.out)
    stats = make_synthetic(args.out, images=args.images, size=args.size, seed=args.seed,
                           overwrite=args.overwrite)
    print(f"wrote synthetic dataset to {args.out}: {stats.get('summary', stats)}")


def _check_stats_json(args):
    if args.stats_json:
        check_output(args.stats_json, folder=False, option="--stats-json")
        if os.path.exists(args.stats_json) and not args.overwrite:
            raise SoloError(f"{args.stats_json}: already exists; use --overwrite or another --stats-json")


def _report_conversion(args, stats):
    from keras_solo.data.convert import format_summary
    from keras_solo.errors import write_json

    print(format_summary(args.out, stats))
    if args.stats_json:
        write_json(args.stats_json, stats, what="conversion stats")


def cmd_convert_cityscapes(args):
    from keras_solo.data.convert import convert_cityscapes

    check_output(args.out, folder=False)
    _check_stats_json(args)
    classes = {"classes": args.classes} if args.classes else {}  # default: the paper's 5 (config.PAPER_CLASSES)
    _report_conversion(args, convert_cityscapes(args.root, args.split, args.out, overwrite=args.overwrite, **classes))


def cmd_convert_yolo(args):
    from keras_solo.data.convert import convert_yolo

    check_output(args.out, folder=False)
    _check_stats_json(args)
    _report_conversion(args, convert_yolo(args.data, args.split, args.out, classes=args.classes,
                                          overwrite=args.overwrite, strict=args.strict,
                                          crowd_groups=args.crowd_groups))


def cmd_inspect_data(args):
    from keras_solo.data.inspect import format_report, inspect_data

    if args.out:
        check_output(args.out)
        if os.path.isdir(args.out) and os.listdir(args.out) and not args.overwrite:
            raise SoloError(f"{args.out}: already holds files; use --overwrite or another --out")
    stats = inspect_data(args.json, image_root=args.images, out_dir=args.out, num_overlays=args.overlays)
    print(format_report(stats))


def cmd_config(args):
    import yaml

    from keras_solo.config import config_to_dict, load_config

    config = load_config(args.config, args.set)
    print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")


def cmd_train(args):
    from keras_solo.config import load_config

    config = load_config(args.config, args.set)
    out = args.out or os.path.join("runs", os.path.splitext(os.path.basename(args.config or "default"))[0])
    check_output(out)  # before TensorFlow loads (7-8 s)
    _quiet_tf()
    from keras_solo import api
    from keras_solo.train import writes_run_folder

    api.train_run(config, out, overwrite=args.overwrite)
    if writes_run_folder(config.train.strategy, os.environ.get("TF_CONFIG")):
        print(f"training done: {out} (best.keras, last.keras, log.csv, loss_curve.png)")
    else:
        print(f"this worker's training is done; the chief wrote the run folder {out}")


def cmd_evaluate(args):
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model)), "eval")
    check_output(out)  # before TensorFlow, the model load and the whole evaluation
    if not args.overwrite:
        held = [n for n in ("metrics.json", "detections.json") if os.path.exists(os.path.join(out, n))]
        if held:
            raise SoloError(f"{out}: already holds {' and '.join(held)}; use --overwrite or another --out")
    _quiet_tf()
    from keras_solo import api
    from keras_solo.errors import write_json
    from keras_solo.evaluate import format_metrics

    metrics, detections = api.coco_metrics(args.model, args.data, args.images, limit=args.limit, progress=True,
                                           overrides=args.set, return_detections=True)
    metrics.update({"model": os.path.abspath(args.model), "data": os.path.abspath(args.data)})
    metrics_path = os.path.join(out, "metrics.json")
    write_json(os.path.join(out, "detections.json"), detections, what="detections", indent=None)
    write_json(metrics_path, metrics, what="metrics")
    print(format_metrics(metrics))
    t = metrics["ms_per_image"]
    print(f"\nms/image: letterbox {t['preprocess']}, network (incl. Matrix NMS) {t['network']}, "
          f"undo letterbox {t['decode']}")
    print(f"wrote {metrics_path} and detections.json")


def _engine_factory(args):
    """`keras_solo.load_engine` for --model, made once the runtime's loop has checked the source and
    --out (TensorFlow loads then)."""
    def make():
        _quiet_tf()
        from keras_solo import api

        return api.load_engine(args.model, threads=args.threads)

    return make


def cmd_predict(args):
    from keras_solo.runtime.cli import predict_command
    from keras_solo.runtime.sources import next_run_dir

    if args.out is None:  # like ultralytics: a fresh numbered folder, never an earlier one
        args.out = next_run_dir(os.path.join("runs", "predict"))
    # The runtime's loop (what keras-solo-runtime predict runs on a device); a .keras model as a KerasEngine.
    predict_command(_engine_factory(args), args, progress=True)


def cmd_track(args):
    from keras_solo.runtime.cli import track_command

    track_command(_engine_factory(args), args, progress=True)


def cmd_ablation(args):
    from keras_solo.ablation import ablation_command, check_variants  # no Keras yet

    if args.variants:
        check_variants(args.variants)  # before Keras loads (7-8 s)
    _quiet_tf()
    ablation_command(args)


def cmd_export(args):
    if args.out:  # before TensorFlow loads (7-8 s); the default lies beside the model
        check_output(args.out, folder=args.format == "saved_model")
    _quiet_tf()
    import keras  # its backend: KERAS_BACKEND or ~/.keras/keras.json

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise SoloError(f"export converts with TensorFlow and needs Keras' TensorFlow backend (this one is "
                        f"{backend!r}); run it with KERAS_BACKEND=tensorflow: a .keras file trained on any backend loads there")
    from keras_solo import api
    from keras_solo.export import export_request, format_export_summary

    model, options = export_request(args)
    meta = api.export_model(model, **options)
    print(format_export_summary(meta, options["path"]))


def cmd_profile(args):
    _quiet_tf()
    from keras_solo.profile import profile_command

    profile_command(args)


def cmd_benchmark(args):
    from keras_solo.benchmark import benchmark_command

    benchmark_command(args)


# ---------------------------------------------------------------------------

def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras-solo")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser():
    from keras_solo.runtime.cli import add_timing_arguments, add_track_arguments

    parser = argparse.ArgumentParser(
        prog="keras-solo",
        description="SOLO instance segmentation with grid attention (Keras 3 / TensorFlow).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"keras-solo {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")
        p.set_defaults(func=func)
        return p

    p = add("make-synthetic", cmd_make_synthetic, "write the deterministic synthetic road-scene COCO dataset")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images", type=int, default=400, help="number of images (train + val)")
    p.add_argument("--size", type=_size, default=(256, 128), help="image size WxH (default 256x128)")
    p.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same files)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")

    p = add("convert-cityscapes", cmd_convert_cityscapes, "Cityscapes gtFine polygons -> COCO instances JSON")
    p.add_argument("--root", required=True, help="Cityscapes root (holds gtFine/ and leftImg8bit/)")
    p.add_argument("--split", default="val", help="Cityscapes split: train | val | test")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--classes", type=_classes, default=None,
                   help="classes to keep, in label order (default: the paper's 5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--stats-json", default=None, metavar="FILE", help="also write the full conversion stats here")

    p = add("convert-yolo", cmd_convert_yolo, "YOLO polygon labels -> COCO instances JSON")
    p.add_argument("--data", required=True, help="YOLO data.yaml")
    p.add_argument("--split", default="train", help="split of data.yaml: train | val | val_extra | val_all ...")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--classes", type=_classes, default=None, help="keep/reorder classes, e.g. person,rider,car")
    p.add_argument("--strict", action="store_true", help="malformed label lines are errors, not warnings")
    p.add_argument("--crowd-groups", action="store_true",
                   help="'<class>group' labels (e.g. persongroup) become crowd regions of that class")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--stats-json", default=None, metavar="FILE", help="also write the full conversion stats here")

    p = add("inspect-data", cmd_inspect_data, "counts per class / area bucket, overlays of a COCO file")
    p.add_argument("json", help="COCO instances JSON")
    p.add_argument("--images", default=None, help="image root (default: the JSON's folder)")
    p.add_argument("--out", default=None, help="folder for overlay PNGs")
    p.add_argument("--overlays", type=int, default=4, help="number of overlay PNGs to draw into --out")
    p.add_argument("--overwrite", action="store_true", help="draw into an --out folder that already holds files")

    p = add("config", cmd_config, "print the resolved config (preset + --set overrides)")
    p.add_argument("--config", default=None, help="YAML preset (default: built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=3")

    p = add("train", cmd_train, "train with model.fit on the tf.data pipeline")
    p.add_argument("--config", required=True, help="YAML preset, e.g. training/demo.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=3")
    p.add_argument("--out", default=None, help="run folder (default runs/<preset>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished run in --out, or restart an unfinished one (without it an unfinished run resumes)")

    p = add("evaluate", cmd_evaluate, "COCO mask AP of a model on a COCO JSON")
    p.add_argument("--model", required=True, help=".keras model, or an export (.tflite / .onnx)")
    p.add_argument("--data", required=True, help="COCO instances JSON")
    p.add_argument("--images", default=None, help="image root (default: the JSON's folder)")
    p.add_argument("--out", default=None, help="folder for metrics.json and detections (default: beside the model)")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N images")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="inference overrides, e.g. eval.score_thr=0.05")
    p.add_argument("--overwrite", action="store_true", help="replace metrics.json / detections.json in --out")

    p = add("predict", cmd_predict, "detections + overlays for an image, a folder or a video")
    p.add_argument("--model", required=True, help=".keras model, or an export (.tflite / .onnx)")
    p.add_argument("--source", required=True, help="image, folder of images, or video")
    p.add_argument("--out", default=None, help="output folder (default: a new runs/predict/N)")
    p.add_argument("--limit", type=int, default=0, help="only the first N images / frames")
    p.add_argument("--score", type=float, default=0.3, help="keep (draw and record) detections above this score")
    p.add_argument("--threads", type=int, default=None, help="exports: CPU threads (default: the sidecar's, else 2)")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")

    p = add("track", cmd_track, "tracked instances (stable IDs) of a video, a camera or a stream, live")
    p.add_argument("--model", required=True, help=".keras model, or an export (.tflite / .onnx)")
    p.add_argument("--threads", type=int, default=None, help="exports: CPU threads (default: the sidecar's, else 2)")
    add_track_arguments(p)

    p = add("ablation", cmd_ablation, "the paper's ablation: no coords / SOLO / SOLO + attention")
    p.add_argument("--config", required=True, help="ablation preset, e.g. training/ablation.yaml")
    p.add_argument("--seeds", type=int, default=1, help="seeds per variant")
    p.add_argument("--variants", default=None, metavar="KEYS",
                   help="comma-separated variants to train: no_coords,solo,attention (default: all); "
                        "the others' finished runs are evaluated and kept in the tables")
    p.add_argument("--eval-json", default=None, metavar="JSON",
                   help="COCO file to report AP on, images under data.val_images (default: data.val_json)")
    p.add_argument("--out", default=None, help="results folder (default runs/ablation_<preset>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=3")
    p.add_argument("--overwrite", action="store_true",
                   help="re-train finished seeds 0..SEEDS-1 (with --variants: of those only)")

    p = add("export", cmd_export, "export to TFLite / ONNX / SavedModel with top-K outputs")
    p.add_argument("--model", required=True, help=".keras model")
    p.add_argument("--format", required=True, choices=tuple(FORMATS), help="output format")
    p.add_argument("--quant", default=None, choices=QUANTS,
                   help="tflite precision (default: export.quant of the run's config.yaml, else fp32)")
    p.add_argument("--imgsz", type=_size, default=None, help="input WxH (default: the model's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="inference overrides baked into the graph, e.g. eval.mask_downsample=2")
    p.add_argument("--calib-data", default=None,
                   help="COCO JSON for int8 calibration (default: data.train_json of the run's config.yaml)")
    p.add_argument("--calib-root", default=None,
                   help="image folder the --calib-data file names are relative to (default: the JSON's folder)")
    p.add_argument("--calib-images", type=int, default=None, help="int8 calibration images (default: 100)")
    p.add_argument("--top-k", type=int, default=None,
                   help="candidate cells over all levels (default: export.top_k of the run's config.yaml, else 100)")
    p.add_argument("--out", default=None, help="output file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file and its sidecar")

    p = add("profile", cmd_profile, "parameters, GFLOPs, attention cost, training throughput, peak memory")
    p.add_argument("--config", required=True, help="YAML preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.batch_size=2")
    p.add_argument("--flops", action="store_true", help="count forward GFLOPs (TF profiler)")
    p.add_argument("--throughput", type=int, default=0, metavar="STEPS", help="time STEPS training steps")
    p.add_argument("--latency", type=int, default=0, metavar="RUNS",
                   help="Keras inference ms/image (batch 1), network vs decoding")
    p.add_argument("--pipeline", type=int, default=0, metavar="BATCHES",
                   help="time BATCHES batches of the tf.data training pipeline")
    p.add_argument("--memory", action="store_true", help="peak RSS of one training step (fresh process)")
    p.add_argument("--batch", type=int, default=2, help="batch for --memory")
    p.add_argument("--full-masks", action="store_true",
                   help="with --memory: compute the full S^2 mask maps (the naive path) instead of gathering")
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the report here")

    p = add("benchmark", cmd_benchmark, "latency of a model in any format (exports on the TF-free runtime)")
    p.add_argument("model", help=".tflite or .onnx file (or .keras: the same graph in TensorFlow)")
    add_timing_arguments(p, threads=2)
    p.add_argument("--data", default=None, help="COCO JSON: also report mask AP of this format on it")
    p.add_argument("--images", default=None, help="image root of --data (default: the JSON's folder)")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N images of --data")
    p.add_argument("--top-k", type=int, default=None, help=".keras only: candidate budget (default: as export)")
    p.add_argument("--profile", action="store_true",
                   help=".tflite: per-block time (backbone, FPN, heads, decoding ...) by timing graph prefixes")
    p.add_argument("--profile-threads", type=int, default=1,
                   help="with --profile: threads (1 = CPU time of the calling thread, robust to load)")
    p.add_argument("--json", default=None, help="write results as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    return parser


def one_line_warnings():
    """keras-solo's own warnings print as ``warning: <message>`` (they name the file and the
    fix); other packages' keep Python's format, with the source line."""
    import warnings

    default = warnings.formatwarning
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep

    def format_warning(message, category, filename, lineno, line=None):
        if issubclass(category, UserWarning) and os.path.abspath(filename).startswith(package):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning


def main(argv=None):
    printable_paths()
    interrupt_on_sigterm()
    one_line_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        try:
            args.func(args)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] not in TRAINING_MODULES:
                raise
            raise SoloError(f"keras-solo {args.command} needs the training install, which lacks {e.name}: "
                            "pip install 'keras-solo[train]' (exported models run without it: "
                            "keras-solo-runtime)") from None
    except SoloError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    else:
        code = 0
    gc.collect()  # free tf.data iterators before interpreter shutdown (docs/ERRORS.md)
    return code


if __name__ == "__main__":
    sys.exit(main())
