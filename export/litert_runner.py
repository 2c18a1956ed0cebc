#!/usr/bin/env python3
"""TensorFlow-free runner for keras-solo exports (.tflite, .onnx).

Imports numpy, opencv (cv2), ai-edge-litert (`.tflite`) or onnxruntime
(`.onnx`), and `keras_solo.detections` (numpy + cv2 only) for the letterbox,
undoing it and the overlays. On a device without the package, copy
`keras_solo/detections.py` next to this file: it is found there too.

    python export/litert_runner.py predict MODEL --source IMAGE|DIR|VIDEO --out DIR
    python export/litert_runner.py benchmark MODEL [--threads N] [--warmup W] [--runs R] [--json OUT]

What a call does (the export graph is described in keras_solo/export.py):

1. preprocess (numpy + cv2): letterbox the RGB image into the model's
   (H, W) canvas (top-left, zero padding), float32 0..255, batch of 1;
2. network: one interpreter / session run. The graph holds the network, the
   top-K candidate masks and Matrix NMS, and returns fixed-size scores,
   labels, masks (at the finest mask resolution) and valid;
3. decode (numpy + cv2): keep valid detections above the score threshold,
   resize their masks to the original image (undo the letterbox), threshold.

The model's input size, class names and mask threshold come from the sidecar
`MODEL.json` that `keras-solo export` writes next to the model (e.g.
`best_int8.tflite.json`). Without it the input size is read from the model,
classes are numbered and the mask threshold is 0.5 (a warning says so).

Bad model files (missing, not a TFLite flatbuffer / ONNX model, an input
that is not (1, H, W, 3) float32 or not the sidecar's size, missing outputs)
print one line, ``error: <file>: <problem>``, and exit with code 2.

`benchmark` reports latency min / p50 / p90 / p99 of the whole call and of
each of the three parts, FPS (1 / mean latency), peak RSS of this process,
model size, and, with the GFLOPs from the sidecar, the achieved GFLOP/s of
the network part.
"""

import argparse
import json
import os
import resource
import sys
import time

import cv2
import numpy as np

try:
    from keras_solo import detections as det
except ImportError:  # a device copy: detections.py beside this file, or the repository layout
    import importlib.util

    _here = os.path.dirname(os.path.abspath(__file__))
    for _candidate in (os.path.join(_here, "detections.py"),
                       os.path.join(_here, os.pardir, "keras_solo", "detections.py")):
        if os.path.exists(_candidate):
            _spec = importlib.util.spec_from_file_location("detections", _candidate)
            det = importlib.util.module_from_spec(_spec)
            _spec.loader.exec_module(det)
            break
    else:
        raise

OUTPUT_NAMES = ("scores", "labels", "masks", "valid")
IMAGE_EXTENSIONS = det.IMAGE_EXTENSIONS
VIDEO_EXTENSIONS = det.VIDEO_EXTENSIONS


class RunnerError(Exception):
    """A one-line error about an input file (exit code 2)."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


# ---------------------------------------------------------------------------
# The engine

def sidecar_path(model_path):
    return os.fspath(model_path).rstrip("/\\") + ".json"


def read_metadata(model_path):
    """The sidecar written by `keras-solo export`, or None when there is none."""
    path = sidecar_path(model_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise RunnerError(f"{path}: cannot read metadata ({type(e).__name__})") from None
    if not isinstance(meta, dict) or "input_size" not in meta or "class_names" not in meta:
        raise RunnerError(f"{path}: not a keras-solo export sidecar (needs input_size and class_names)")
    return meta


class _TFLiteBackend:
    def __init__(self, path, threads):
        from ai_edge_litert.interpreter import Interpreter

        with open(path, "rb") as f:
            head = f.read(8)
        if len(head) < 8 or head[4:8] != b"TFL3":
            raise RunnerError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise RunnerError(f"{path}: cannot load TFLite model ({str(e).splitlines()[0][:160]})") from None
        signatures = self.interpreter.get_signature_list()
        details = self.interpreter.get_input_details()
        if len(details) != 1:
            raise RunnerError(f"{path}: expected one image input, the model has {len(details)}")
        self.input_shape = tuple(int(v) for v in details[0]["shape"])
        self.input_dtype = np.dtype(details[0]["dtype"])
        self._input_index = details[0]["index"]
        if signatures:
            key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
            runner = self.interpreter.get_signature_runner(key)
            self.output_names = tuple(runner.get_output_details())
            self._outputs = {name: d["index"] for name, d in runner.get_output_details().items()}
        else:
            outputs = self.interpreter.get_output_details()
            self.output_names = tuple(d["name"] for d in outputs)
            self._outputs = {d["name"]: d["index"] for d in outputs}

    def __call__(self, batch):
        self.interpreter.set_tensor(self._input_index, batch)
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(index) for name, index in self._outputs.items()}


class _OnnxBackend:
    def __init__(self, path, threads):
        import onnxruntime as ort

        ort.set_default_logger_severity(3)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between runs: spinning workers take the cores the numpy decoding
        # (and anything else on a small CPU) needs; on the 2-core test machine, spinning
        # doubled the ONNX latency under load.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise RunnerError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:160]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise RunnerError(f"{path}: expected one image input, the model has {len(inputs)}")
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inputs[0].shape)
        self.input_dtype = np.dtype(np.float32) if inputs[0].type == "tensor(float)" else np.dtype(object)
        self._input_name = inputs[0].name
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def __call__(self, batch):
        return dict(zip(self.output_names, self.session.run(list(self.output_names), {self._input_name: batch})))


class Engine:
    """One exported model, ready to run on RGB uint8 images of any size.

    Args:
        model_path: a `.tflite` or `.onnx` file written by `keras-solo export`.
        threads: CPU threads of the interpreter / session. Defaults to 2.

    Raises:
        RunnerError: a missing or unreadable model file, a model whose input is
            not (1, H, W, 3) float32 or not the sidecar's size, or whose outputs
            are not scores / labels / masks / valid.
    """

    def __init__(self, model_path, threads=2):
        path = os.fspath(model_path)
        if not os.path.exists(path):
            raise RunnerError(f"{path}: no such model file")
        if os.path.isdir(path):
            raise RunnerError(f"{path}: is a folder; expected a .tflite or .onnx file")
        lower = path.lower()
        if lower.endswith(".tflite"):
            self.format = "tflite"
            self.backend = _TFLiteBackend(path, threads)
        elif lower.endswith(".onnx"):
            self.format = "onnx"
            self.backend = _OnnxBackend(path, threads)
        else:
            raise RunnerError(f"{path}: expected a .tflite or .onnx file")
        self.path = path
        self.threads = threads
        self.meta = read_metadata(path)
        shape = self.backend.input_shape
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or self.backend.input_dtype != np.float32:
            raise RunnerError(f"{path}: input is {list(shape)} {self.backend.input_dtype}; "
                              "expected a (1, H, W, 3) float32 image")
        if self.meta is not None:
            width, height = (int(v) for v in self.meta["input_size"])
            if (shape[1], shape[2]) != (height, width):
                raise RunnerError(f"{path}: input is {shape[2]}x{shape[1]} (WxH) but its metadata "
                                  f"{os.path.basename(sidecar_path(path))} says {width}x{height}")
            self.class_names = tuple(self.meta["class_names"])
            self.mask_thr = float(self.meta.get("mask_thr", 0.5))
        else:
            height, width = shape[1], shape[2]
            print(f"warning: {sidecar_path(path)} not found; input {width}x{height} from the model, "
                  "numbered classes, mask threshold 0.5", file=sys.stderr)
            self.class_names = None
            self.mask_thr = 0.5
        if height <= 0 or width <= 0:
            raise RunnerError(f"{path}: input has no static size ({list(shape)})")
        self.input_size = (width, height)
        missing = [n for n in OUTPUT_NAMES if n not in self.backend.output_names]
        if missing:
            raise RunnerError(f"{path}: outputs {list(self.backend.output_names)} lack {missing}; "
                              "not a keras-solo export")

    def preprocess(self, image):
        """(h, w, 3) uint8 RGB -> ((1, H, W, 3) float32, letterbox scale).

        The resized image is written straight into a float32 input buffer kept
        between calls (its padding is zeroed only where the previous image
        covered it), instead of a fresh uint8 canvas converted each call.
        """
        width, height = self.input_size
        resized, scale = det.letterbox_resize(image, self.input_size)
        new_h, new_w = resized.shape[:2]
        buffer = getattr(self, "_buffer", None)
        if buffer is None:
            buffer = self._buffer = np.zeros((1, height, width, 3), np.float32)
            self._filled = (height, width)
        old_h, old_w = self._filled
        if old_h > new_h:
            buffer[0, new_h:old_h] = 0.0
        if old_w > new_w:
            buffer[0, :old_h, new_w:old_w] = 0.0
        buffer[0, :new_h, :new_w] = resized
        self._filled = (new_h, new_w)
        return buffer, scale

    def network(self, batch):
        """One run of the exported graph: dict of the fixed-size outputs (batch 1)."""
        return self.backend(batch)

    def decode(self, outputs, orig_size, scale, min_score=0.0):
        """Fixed-size outputs -> detections in original pixels (numpy, undo letterbox)."""
        one = {name: np.asarray(outputs[name])[0] for name in OUTPUT_NAMES}
        width, height = self.input_size
        return det.to_original(one, input_size=(height, width), orig_size=orig_size, scale=scale,
                               mask_thr=self.mask_thr, min_score=min_score)

    def __call__(self, image, min_score=0.0):
        """Detections of one (h, w, 3) uint8 RGB image, and the timing of its parts in seconds."""
        t0 = time.perf_counter()
        batch, scale = self.preprocess(image)
        t1 = time.perf_counter()
        outputs = self.network(batch)
        t2 = time.perf_counter()
        found = self.decode(outputs, image.shape[:2], scale, min_score)
        t3 = time.perf_counter()
        return found, {"preprocess": t1 - t0, "network": t2 - t1, "decode": t3 - t2, "total": t3 - t0}

    def names(self):
        """Class names by label; () without a sidecar (labels are then printed as numbers)."""
        return self.class_names or ()


# ---------------------------------------------------------------------------
# predict

def read_rgb(path):
    image = det.read_rgb_or_none(path)  # stored pixels, EXIF orientation ignored: as training and evaluate
    if image is None:
        raise RunnerError(f"{path}: cannot read image (corrupt or not an image)")
    return image


def list_sources(source):
    if not os.path.exists(source):
        raise RunnerError(f"{source}: no such file or folder")
    if os.path.isdir(source):
        paths = sorted(os.path.join(source, n) for n in os.listdir(source) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not paths:
            raise RunnerError(f"{source}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return "images", paths
    lower = source.lower()
    if lower.endswith(VIDEO_EXTENSIONS):
        return "video", source
    if lower.endswith(IMAGE_EXTENSIONS):
        return "images", [source]
    raise RunnerError(f"{source}: not an image ({', '.join(IMAGE_EXTENSIONS)}) or a video "
                      f"({', '.join(VIDEO_EXTENSIONS)})")


def rle_uncompressed(mask):
    """COCO uncompressed RLE of a bool mask (column-major runs, starting with 0s)."""
    flat = np.asarray(mask, np.uint8).flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def detections_record(name, found, class_names):
    return {
        "source": name,
        "instances": [
            {"label": int(label),
             "class": class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label)),
             "score": round(float(score), 4),
             "bbox_xywh": [round(float(v), 1) for v in box], "segmentation": rle_uncompressed(mask)}
            for score, label, mask, box in zip(found["scores"], found["labels"], found["masks"], found["boxes"])
        ],
    }


def predict(engine, source, out, *, score_thr=0.3, limit=0, overwrite=False):
    """Overlays (and a video) plus detections.json for an image, a folder or a video."""
    kind, sources = list_sources(source)
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunnerError(f"{out}: exists and is not a folder; --out must name a folder")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunnerError(f"{out}: cannot write here ({parent} is not writable)")
    if os.path.exists(out) and os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise RunnerError(f"{out}: already holds files; use --overwrite or another --out")
    os.makedirs(out, exist_ok=True)
    names = engine.names()
    records, times = [], []
    if kind == "images":
        chosen = sources[:limit] if limit else sources
        for path, name in zip(chosen, det.overlay_names(chosen)):
            image = read_rgb(path)
            found, timing = engine(image, min_score=score_thr)
            times.append(timing["total"])
            overlay = det.draw_overlay(image, found, names, score_thr=score_thr)
            cv2.imwrite(os.path.join(out, name), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            records.append(detections_record(os.path.basename(path), found, names))
    else:
        capture = cv2.VideoCapture(sources)
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok:
            problem = det.video_open_problem(capture)
            capture.release()
            raise RunnerError(f"{sources}: {problem}")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps_in = capture.get(cv2.CAP_PROP_FPS) or 25.0
        h, w = frame.shape[:2]
        stem = os.path.splitext(os.path.basename(sources))[0]
        writer = cv2.VideoWriter(os.path.join(out, f"{stem}_pred.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                 fps_in, (w, h))
        index = 0
        try:
            while ok and (not limit or index < limit):
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                found, timing = engine(rgb, min_score=score_thr)
                times.append(timing["total"])
                fps = 1.0 / max(1e-9, float(np.mean(times[-10:])))
                overlay = det.draw_overlay(rgb, found, names, score_thr=score_thr, fps=fps)
                writer.write(cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
                records.append(detections_record(f"{os.path.basename(sources)}#{index}", found, names))
                index += 1
                ok, frame = capture.read()
        finally:
            capture.release()
            writer.release()
        warning = det.video_ended_early(sources, index, count, limit)
        if warning:
            print(warning, file=sys.stderr)
    tmp = os.path.join(out, "detections.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(records, f)
    os.replace(tmp, os.path.join(out, "detections.json"))
    return kind, records, times


# ---------------------------------------------------------------------------
# benchmark

def percentiles_ms(values):
    ms = np.asarray(values, np.float64) * 1000.0
    return {"min": round(float(ms.min()), 3), "p50": round(float(np.percentile(ms, 50)), 3),
            "p90": round(float(np.percentile(ms, 90)), 3), "p99": round(float(np.percentile(ms, 99)), 3),
            "mean": round(float(ms.mean()), 3)}


def peak_rss_mb():
    """Peak resident set size of this process, MiB.

    Linux: VmHWM of /proc/self/status (the high-water mark of this process's
    own memory; `ru_maxrss` would report the parent's peak when the parent
    was larger, because Linux carries it over fork + exec). Elsewhere
    `ru_maxrss` (macOS reports bytes, others KiB).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def benchmark(engine, image=None, *, warmup=5, runs=50, min_score=0.3):
    """Times `engine` on one image (a fixed-seed random image when None).

    The decode step handles the detections scoring above ``min_score`` (as
    `predict` does with ``--score``); its cost grows with their number and the
    original image size (each mask is resized to the original image).

    Returns:
        dict: latency_ms (min/p50/p90/p99/mean of the whole call), preprocess_ms,
        network_ms, decode_ms, fps, cpu_ms_per_run, loadavg_1m, detections,
        peak_rss_mb, model_size_mb, gflops and achieved_gflops_per_s (network
        p50) when the sidecar has GFLOPs.
    """
    if warmup < 0 or runs < 1:
        raise RunnerError(f"--warmup {warmup} / --runs {runs}: need warmup >= 0 and runs >= 1")
    if image is None:
        width, height = engine.input_size
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    timings = {"total": [], "preprocess": [], "network": [], "decode": []}
    found = None
    load_before = _loadavg()
    for i in range(warmup + runs):
        if i == warmup:
            cpu_start = time.process_time()
        found, timing = engine(image, min_score=min_score)
        if i >= warmup:
            for key in timings:
                timings[key].append(timing[key])
    cpu_ms = 1000.0 * (time.process_time() - cpu_start) / runs
    meta = engine.meta or {}
    size = os.path.getsize(engine.path)
    result = {
        "model": os.path.abspath(engine.path),
        "format": engine.format,
        "quant": meta.get("quant", "unknown"),
        "input_size": list(engine.input_size),
        "image_size": [int(image.shape[1]), int(image.shape[0])],
        "threads": engine.threads,
        "warmup": warmup,
        "runs": runs,
        "latency_ms": percentiles_ms(timings["total"]),
        "preprocess_ms": percentiles_ms(timings["preprocess"]),
        "network_ms": percentiles_ms(timings["network"]),
        "decode_ms": percentiles_ms(timings["decode"]),
        "fps": round(1.0 / float(np.mean(timings["total"])), 2),
        # CPU time of this process per call (all threads; includes pool spin-waiting): a
        # contention-independent cost, where latency depends on what else runs on the cores.
        "cpu_ms_per_run": round(cpu_ms, 2),
        "loadavg_1m": [load_before, _loadavg()],  # of the machine, before and after the runs
        "detections": int(len(found["scores"])) if found is not None else 0,
        "min_score": min_score,
        "peak_rss_mb": peak_rss_mb(),
        "model_size_mb": round(size / 2**20, 3),
    }
    if meta.get("gflops"):
        result["gflops"] = meta["gflops"]
        result["achieved_gflops_per_s"] = round(meta["gflops"] / (result["network_ms"]["p50"] / 1000.0), 1)
    return result


def _peer_session(path, threads):
    """An onnxruntime session of a peer ONNX model and a fixed random input for it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RunnerError(f"{path}: timing an ONNX peer needs onnxruntime (pip install onnxruntime)") from None
    if not os.path.isfile(path):
        raise RunnerError(f"{path}: no such peer model file")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise RunnerError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:160]})") from None
    inp = session.get_inputs()[0]
    if any(not isinstance(d, int) for d in inp.shape):
        raise RunnerError(f"{path}: input {inp.shape} has no static size")
    dtype = np.float16 if "float16" in inp.type else np.float32
    x = np.random.default_rng(0).random(inp.shape).astype(dtype)
    return session, {inp.name: x}, list(inp.shape)


def compare(engine, peers, image=None, *, rounds=3, warmup=10, runs=100, min_score=0.3):
    """Our whole call beside ONNX peers' network-only runs, interleaved in rounds.

    Each round times `runs` calls of ours (letterbox + network + decode, as
    `benchmark`), then `runs` of each peer (onnxruntime, same threads, a
    fixed random input: network only), so load changes hit every model of a
    round alike; compare the ratios of one round, not absolute times across
    runs.

    Returns:
        dict: ``rounds`` [{ours: {total, network, decode}, peers: {name: p50},
        ratio: {name: ours total / peer}}] (p50 ms), ``peers`` {name: input
        shape}, ``detections``, ``threads``, ``loadavg_1m``.
    """
    if rounds < 1 or runs < 1 or warmup < 0:
        raise RunnerError("--rounds and --runs must be >= 1, --warmup >= 0")
    if image is None:
        width, height = engine.input_size
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    sessions = {os.path.basename(p): _peer_session(p, engine.threads) for p in peers}
    for _ in range(warmup):
        found, _ = engine(image, min_score=min_score)
        for session, feed, _ in sessions.values():
            session.run(None, feed)
    load_before = _loadavg()
    results = []
    for _ in range(rounds):
        parts = {"total": [], "network": [], "decode": []}
        for _ in range(runs):
            found, timing = engine(image, min_score=min_score)
            for key in parts:
                parts[key].append(timing[key])
        row = {"ours": {k: percentiles_ms(v)["p50"] for k, v in parts.items()}, "peers": {}, "ratio": {}}
        for name, (session, feed, _) in sessions.items():
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                session.run(None, feed)
                times.append(time.perf_counter() - start)
            row["peers"][name] = percentiles_ms(times)["p50"]
            row["ratio"][name] = round(row["ours"]["total"] / row["peers"][name], 3)
        results.append(row)
    return {"model": os.path.abspath(engine.path), "input_size": list(engine.input_size),
            "image_size": [int(image.shape[1]), int(image.shape[0])], "threads": engine.threads,
            "runs": runs, "warmup": warmup, "detections": int(len(found["scores"])), "min_score": min_score,
            "peers": {name: shape for name, (_, _, shape) in sessions.items()}, "rounds": results,
            "loadavg_1m": [load_before, _loadavg()]}


def format_compare(result):
    lines = [f"{os.path.basename(result['model'])} whole call ({result['detections']} detections > "
             f"{result['min_score']}) vs ONNX peers, network only; {result['threads']} threads, "
             f"p50 of {result['runs']} runs per model and round, load average "
             f"{result['loadavg_1m'][0]} -> {result['loadavg_1m'][1]}"]
    for i, row in enumerate(result["rounds"], 1):
        ours = row["ours"]
        peers = "  ".join(f"{name} {ms:.2f} (ratio {row['ratio'][name]:.2f})" for name, ms in row["peers"].items())
        lines.append(f"  round {i}: ours {ours['total']:.2f} (network {ours['network']:.2f}, "
                     f"decode {ours['decode']:.2f})  {peers}")
    return "\n".join(lines)


def format_benchmark(result):
    lat, net, dec, pre = (result[k] for k in ("latency_ms", "network_ms", "decode_ms", "preprocess_ms"))
    lines = [
        f"{os.path.basename(result['model'])} ({result['format']} {result['quant']}, "
        f"{result['input_size'][0]}x{result['input_size'][1]}, {result['threads']} threads, "
        f"{result['runs']} runs after {result['warmup']} warm-up)",
        f"  latency ms  min {lat['min']:.2f}  p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}"
        f"  ({result['fps']:.1f} FPS)",
        f"  p50 split   preprocess {pre['p50']:.2f}  network {net['p50']:.2f}  decode {dec['p50']:.2f} ms",
        f"  model {result['model_size_mb']:.2f} MiB, peak RSS {result['peak_rss_mb']:.0f} MiB, "
        f"{result['detections']} detections > {result['min_score']}, {result['cpu_ms_per_run']:.1f} CPU-ms per call, "
        f"load average {result['loadavg_1m'][0]} -> {result['loadavg_1m'][1]}",
    ]
    if "gflops" in result:
        lines.append(f"  {result['gflops']:.2f} GFLOPs, {result['achieved_gflops_per_s']:.1f} GFLOP/s (network p50)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# command line

def build_parser():
    parser = argparse.ArgumentParser(prog="litert_runner.py",
                                     description="Run keras-solo exports (.tflite / .onnx) without TensorFlow.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("predict", help="overlays + detections.json for an image, a folder or a video")
    p.add_argument("model", help=".tflite or .onnx file (with its MODEL.json sidecar)")
    p.add_argument("--source", required=True, help="image, folder of images, or video")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the sidecar's, else 2)")
    p.add_argument("--score", type=float, default=0.3, help="keep detections above this score")
    p.add_argument("--limit", type=int, default=0, help="only the first N images / frames")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")
    p = sub.add_parser("benchmark", help="latency, FPS, peak RSS, model size")
    p.add_argument("model", help=".tflite or .onnx file (with its MODEL.json sidecar)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the sidecar's, else 2)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    p.add_argument("--runs", type=int, default=50, help="timed calls (per model and round with --compare)")
    p.add_argument("--source", default=None, help="image to run on (default: a fixed random image)")
    p.add_argument("--score", type=float, default=0.3, help="decode detections above this score (as predict)")
    p.add_argument("--compare", nargs="+", default=None, metavar="PEER.onnx",
                   help="interleave rounds with these ONNX peers (network only) and print ratios")
    p.add_argument("--rounds", type=int, default=3, help="with --compare: interleaved rounds")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    return parser


def _threads(args):
    if args.threads is not None:
        if args.threads < 1:
            raise RunnerError(f"--threads {args.threads}: must be >= 1")
        return args.threads
    meta = read_metadata(args.model) if os.path.exists(args.model) else None
    return int(((meta or {}).get("export_config") or {}).get("threads", 2))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        engine = Engine(args.model, threads=_threads(args))
        if args.command == "predict":
            kind, records, times = predict(engine, args.source, args.out, score_thr=args.score, limit=args.limit,
                                           overwrite=args.overwrite)
            fps = len(times) / sum(times) if times else 0.0
            count = sum(len(r["instances"]) for r in records)
            print(f"predicted {len(records)} {'images' if kind == 'images' else 'frames'} ({count} instances, "
                  f"{fps:.1f} FPS); overlays and detections.json in {args.out}")
        else:
            if args.json and os.path.exists(args.json) and not args.overwrite:
                raise RunnerError(f"{args.json}: already exists; use --overwrite or another --json")
            image = read_rgb(args.source) if args.source else None
            if args.compare:
                result = compare(engine, args.compare, image, rounds=args.rounds, warmup=args.warmup,
                                 runs=args.runs, min_score=args.score)
                print(format_compare(result))
            else:
                result = benchmark(engine, image, warmup=args.warmup, runs=args.runs, min_score=args.score)
                print(format_benchmark(result))
            if args.json:
                tmp = args.json + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(result, f, indent=1)
                os.replace(tmp, args.json)
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
