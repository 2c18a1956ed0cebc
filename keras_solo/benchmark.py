"""`keras-solo benchmark`: latency (and mask AP) of a model in each format.

One path for every format, so the numbers compare:

- ``.tflite`` / ``.onnx`` (the runnable `FORMATS`): timed by the runtime's
  `benchmark` in a fresh ``python -m keras_solo.runtime.cli benchmark``
  process (what `keras-solo-runtime benchmark` runs on a device), so its peak
  RSS is the runtime's own, without TensorFlow.
- ``.keras``: the same export graph (`keras_solo.engine.export_graph_engine`:
  same top-K, Matrix NMS in the graph) in a ``tf.function``, with TensorFlow
  limited to ``--threads`` intra-op threads and one inter-op thread, timed in
  this process by the same `benchmark` loop (its peak RSS includes
  TensorFlow).

Each call is timed as letterbox (numpy) + network (graph incl. Matrix NMS)
+ decode (numpy: undo the letterbox, threshold, for the detections above
``--score``, as `predict` keeps them), on ``--source`` or a fixed random
image. With ``--data FILE.json`` the model is also evaluated (COCO mask AP)
through the same engine and `keras_solo.evaluate.evaluate_engine`.
"""

import json
import os
import subprocess
import sys
import time

from keras_solo.errors import SoloError, write_json
from keras_solo.runtime.cli import check_json_output, check_timing_arguments, run_benchmark
from keras_solo.runtime.formats import FORMATS, RUNNABLE, format_of, read_sidecar, sidecar_path


def _run_runtime(args):
    """The runtime's `benchmark` in a fresh process (no TensorFlow there); its JSON result."""
    import tempfile

    command = [sys.executable, "-m", "keras_solo.runtime.cli", "benchmark", os.fspath(args.model),
               "--threads", str(args.threads), "--warmup", str(args.warmup), "--runs", str(args.runs),
               "--score", str(args.score)]
    if args.compare:
        command += ["--compare", *args.compare, "--rounds", str(args.rounds)]
    if args.source:
        command += ["--source", args.source]
    with tempfile.TemporaryDirectory(prefix="keras_solo_bench_") as work:
        out = os.path.join(work, "result.json")
        proc = subprocess.run(command + ["--json", out], capture_output=True, text=True)
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

    if format_of(args.model) != "tflite":
        raise SoloError(f"{args.model}: --profile reads a .tflite file")
    image = None
    if args.source:
        import numpy as np

        from keras_solo.runtime.image import letterbox_image, read_image

        meta = read_sidecar(args.model)
        if meta is None:
            raise SoloError(f"{sidecar_path(args.model)}: --profile --source needs the export's sidecar (input size)")
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
    if args.threads < 1:
        raise SoloError(f"--threads {args.threads}: must be >= 1")
    fmt = "keras" if args.model.lower().endswith(".keras") else format_of(args.model)
    if fmt is None:
        suffixes = ", ".join(FORMATS[name]["suffix"] for name in RUNNABLE)
        raise SoloError(f"{args.model}: expected a {suffixes} or .keras file")
    check_json_output(args.json, args.overwrite)
    if args.profile:
        return _profile(args)
    check_timing_arguments(args)
    if args.compare:
        if fmt == "keras":
            raise SoloError(f"{args.model}: --compare times an exported {' / '.join(RUNNABLE)} file")
        if args.data:
            raise SoloError("--compare and --data: run the accuracy evaluation separately")
    from keras_solo.engine import export_graph_engine, load_engine
    from keras_solo.evaluate import evaluate_engine

    if fmt == "keras":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        engine = export_graph_engine(args.model, threads=args.threads, top_k=args.top_k)
    else:
        engine = load_engine(args.model, threads=args.threads) if args.data else None
    coco = None
    if args.data:  # read and check the evaluation data before timing anything
        from keras_solo.data.coco import check_image_files, load_coco

        coco = load_coco(args.data, args.images, class_names=engine.class_names or None)
        check_image_files(coco)
    result = run_benchmark(engine, args) if fmt == "keras" else _run_runtime(args)
    if coco is not None:
        start = time.perf_counter()
        metrics, _ = evaluate_engine(engine, coco, limit=args.limit)
        result["eval"] = {"data": os.path.abspath(args.data), "segm": metrics["segm"], "bbox": metrics["bbox"],
                          "num_images": metrics["num_images"], "num_detections": metrics["num_detections"],
                          "ms_per_image": metrics["ms_per_image"], "seconds": round(time.perf_counter() - start, 1)}
        print(f"  mask AP {metrics['segm']['AP']:.1f}  AP50 {metrics['segm']['AP50']:.1f}  "
              f"AP75 {metrics['segm']['AP75']:.1f}  on {metrics['num_images']} images of {args.data}")
    if args.json:
        write_json(args.json, result, what="benchmark results")
    return result
