"""`keras-solo benchmark`: latency (and mask AP) of a model in each format.

One path for every format, so the numbers compare:

- ``.tflite`` / ``.onnx``: the TF-free runner (`export/litert_runner.py`)
  is started in a subprocess, so its peak RSS is the runner's own (no
  TensorFlow in that process): ``python export/litert_runner.py benchmark``.
- ``.keras``: the same export graph (`keras_solo.export.serving_function`,
  same top-K, Matrix NMS in the graph) in a ``tf.function``, with TensorFlow
  limited to ``--threads`` intra-op threads and one inter-op thread, timed in
  this process by the runner's own `benchmark` loop (its peak RSS includes
  TensorFlow).

Each call is timed as letterbox (numpy) + network (graph incl. Matrix NMS)
+ decode (numpy: undo the letterbox, threshold, for the detections above
``--score``, as `predict` draws them), on ``--source`` or a fixed random
image.

With ``--data FILE.json`` the model is also evaluated (COCO mask AP through
`keras_solo.evaluate.COCOEvaluator`) on that set, through the same engine:
letterbox with `keras_solo.detections.letterbox_image`, the model, then
`keras_solo.detections.to_original`; this is the evaluation path for
exported models.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time

from keras_solo.errors import SoloError, check_output, write_json

RUNNER_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "export", "litert_runner.py")


def load_runner():
    """The TF-free runner module (`export/litert_runner.py`), imported from its file."""
    if not os.path.exists(RUNNER_PATH):
        raise SoloError(f"{RUNNER_PATH}: the runner is missing (keras-solo benchmark runs from a source checkout)")
    module = sys.modules.get("keras_solo_litert_runner")
    if module is None:
        spec = importlib.util.spec_from_file_location("keras_solo_litert_runner", RUNNER_PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def keras_engine(model_path, *, threads=2, top_k=None):
    """A runner-compatible engine around a `.keras` model (the export graph in TF).

    Args:
        model_path: the `.keras` file.
        threads: TensorFlow intra-op threads (inter-op: 1). Set before
            TensorFlow runs anything; later calls keep the first setting.
        top_k: candidate budget; default the run's config.yaml `export.top_k`
            next to the model, else `ExportConfig().top_k`.
    """
    import tensorflow as tf

    from keras_solo import export
    from keras_solo.config import ExportConfig
    from keras_solo.model.solo import load_model

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already initialised in this process
    runner = load_runner()
    model = load_model(model_path)
    if top_k is None:
        run_config = export._run_config(model_path)  # noqa: SLF001
        top_k = (run_config.export if run_config is not None else ExportConfig()).top_k
    graph = tf.function(export.serving_function(model, top_k=top_k), input_signature=export.input_signature(model))

    class KerasEngine(runner.Engine):
        def __init__(self):  # noqa: D107 (no file checks: the model is loaded)
            self.path = os.fspath(model_path)
            self.format = "keras"
            self.threads = int(threads)
            self.meta = {"quant": "fp32", "top_k": int(top_k), "gflops": None}
            self.input_size = tuple(model.input_size)
            self.class_names = tuple(model.class_names)
            self.mask_thr = float(model.mask_thr)
            self.backend = lambda batch: {k: v.numpy() for k, v in graph(tf.constant(batch)).items()}

    return KerasEngine()


def make_engine(model_path, *, threads=2, top_k=None):
    """A `.keras` / `.tflite` / `.onnx` engine with the runner's interface."""
    if str(model_path).endswith(".keras"):
        return keras_engine(model_path, threads=threads, top_k=top_k)
    runner = load_runner()
    try:
        return runner.Engine(model_path, threads=threads)
    except runner.RunnerError as e:
        raise SoloError(str(e)) from None


def evaluate_exported(engine, coco, *, limit=0, progress=True):
    """COCO mask AP of an engine (any format) on a loaded `CocoDataset`.

    Returns:
        the metrics dict of `COCOEvaluator.evaluate`, plus ``ms_per_image``
        (preprocess / network / decode means).
    """
    from tqdm import tqdm

    from keras_solo.data.coco import read_image
    from keras_solo.evaluate import COCOEvaluator

    if engine.class_names is not None and tuple(engine.class_names) != tuple(coco.class_names):
        raise SoloError(f"{coco.json_path}: classes {list(coco.class_names)} differ from the model's "
                        f"{list(engine.class_names)}")
    evaluator = COCOEvaluator(coco)
    records = coco.records[:limit] if limit else coco.records
    totals = {"preprocess": 0.0, "network": 0.0, "decode": 0.0}
    for record in tqdm(records, desc="evaluate", unit="img", disable=not progress):
        image = read_image(record.path)
        found, timing = engine(image)
        evaluator.process(record.image_id, found)
        for key in totals:
            totals[key] += timing[key]
    metrics = evaluator.evaluate()
    metrics["ms_per_image"] = {k: round(1000 * v / max(1, len(records)), 2) for k, v in totals.items()}
    return metrics


def _run_runner(args):
    """`litert_runner.py benchmark` in a fresh process; returns its JSON result."""
    import tempfile

    runner_args = [sys.executable, RUNNER_PATH, "benchmark", os.fspath(args.model), "--threads", str(args.threads),
                   "--warmup", str(args.warmup), "--runs", str(args.runs),
                   "--score", str(getattr(args, "score", 0.3))]
    if getattr(args, "compare", None):
        runner_args += ["--compare", *args.compare, "--rounds", str(args.rounds)]
    if getattr(args, "source", None):
        runner_args += ["--source", args.source]
    with tempfile.TemporaryDirectory(prefix="keras_solo_bench_") as work:
        out = os.path.join(work, "result.json")
        proc = subprocess.run(runner_args + ["--json", out], capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
            message = lines[-1][len("error:"):].strip() if lines else (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise SoloError(message)
        print(proc.stdout.strip())
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def _profile(args):
    """`--profile`: per-block time of a `.tflite` (keras_solo.litert_profile)."""
    from keras_solo import litert_profile

    if not args.model.lower().endswith(".tflite"):
        raise SoloError(f"{args.model}: --profile reads a .tflite file")
    image = None
    if getattr(args, "source", None):
        import numpy as np

        from keras_solo.data.coco import read_image
        from keras_solo.detections import letterbox_image

        runner = load_runner()
        try:
            meta = runner.read_metadata(args.model)
        except runner.RunnerError as e:
            raise SoloError(str(e)) from None
        if meta is None:
            raise SoloError(f"{runner.sidecar_path(args.model)}: --profile --source needs the export's sidecar "
                            "(input size)")
        image = letterbox_image(read_image(args.source), tuple(meta["input_size"]))[0][None].astype(np.float32)
    try:
        result = litert_profile.profile_tflite(args.model, threads=args.profile_threads, image=image)
    except (RuntimeError, ValueError) as e:
        raise SoloError(f"{args.model}: cannot profile ({str(e).splitlines()[0][:160]})") from None
    print(litert_profile.format_profile(result))
    if args.json:
        write_json(args.json, result, what="profile")
    return result


def benchmark_command(args):
    """`keras-solo benchmark MODEL`: see the module docstring."""
    if not os.path.exists(args.model):
        raise SoloError(f"{args.model}: no such model file")
    if args.threads < 1 or args.runs < 1 or args.warmup < 0:
        raise SoloError("--threads and --runs must be >= 1, --warmup >= 0")
    lower = args.model.lower()
    if not lower.endswith((".tflite", ".onnx", ".keras")):
        raise SoloError(f"{args.model}: expected a .tflite, .onnx or .keras file")
    if args.json:  # before any timing: an earlier result is kept unless --overwrite
        check_output(args.json, folder=False, option="--json")
        if os.path.exists(args.json) and not getattr(args, "overwrite", False):
            raise SoloError(f"{args.json}: already exists; use --overwrite or another --json")
    if getattr(args, "profile", False):
        return _profile(args)
    if getattr(args, "compare", None):
        if not lower.endswith((".tflite", ".onnx")):
            raise SoloError(f"{args.model}: --compare times an exported .tflite / .onnx")
        if getattr(args, "data", None):
            raise SoloError("--compare and --data: run the accuracy evaluation separately")
        for peer in args.compare:
            if not os.path.isfile(peer) or not peer.lower().endswith(".onnx"):
                raise SoloError(f"{peer}: --compare needs existing .onnx peer files")
    top_k = getattr(args, "top_k", None)
    engine = None
    if lower.endswith(".keras"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        engine = keras_engine(args.model, threads=args.threads, top_k=top_k)
    coco = None
    if getattr(args, "data", None):  # read and check the evaluation data before timing anything
        from keras_solo.data.coco import check_image_files, load_coco

        engine = engine or make_engine(args.model, threads=args.threads)
        coco = load_coco(args.data, getattr(args, "images", None),
                         class_names=engine.class_names if engine.class_names else None)
        check_image_files(coco)
    if lower.endswith(".keras"):
        runner = load_runner()
        image = None
        if getattr(args, "source", None):
            from keras_solo.data.coco import read_image

            image = read_image(args.source)
        result = runner.benchmark(engine, image, warmup=args.warmup, runs=args.runs,
                                  min_score=getattr(args, "score", 0.3))
        print(runner.format_benchmark(result))
    else:
        result = _run_runner(args)
    if coco is not None:
        start = time.perf_counter()
        metrics = evaluate_exported(engine, coco, limit=getattr(args, "limit", 0) or 0)
        result["eval"] = {"data": os.path.abspath(args.data), "segm": metrics["segm"], "bbox": metrics["bbox"],
                          "num_images": metrics["num_images"], "num_detections": metrics["num_detections"],
                          "ms_per_image": metrics["ms_per_image"], "seconds": round(time.perf_counter() - start, 1)}
        print(f"  mask AP {metrics['segm']['AP']:.1f}  AP50 {metrics['segm']['AP50']:.1f}  "
              f"AP75 {metrics['segm']['AP75']:.1f}  on {metrics['num_images']} images of {args.data}")
    if args.json:
        write_json(args.json, result, what="benchmark results")
    return result
