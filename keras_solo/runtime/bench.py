"""Timing and dataset loops over an engine: `benchmark` (latency of the whole
call and of its parts, FPS, peak RSS, model size), `compare` (our whole call
beside ONNX peers, interleaved) and `inference_on_dataset` (the one loop that
runs an engine over a dataset, for evaluation)."""

import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from keras_solo.errors import SoloError
from keras_solo.runtime.engine import onnx_session
from keras_solo.runtime.image import read_image
from keras_solo.runtime.sources import progress_bar


def inference_on_dataset(engine, items, on_image, *, min_score=0.0, progress=True):
    """Runs `engine` on every image of `items` and hands each result to `on_image`.

    detectron2's ``inference_on_dataset(model, loader, evaluator)``: the next
    image is read in a thread while the engine runs (cv2 releases the GIL).

    Args:
        engine: an `Engine` (any format).
        items: sequence of (image_id, image path).
        on_image: callback(image_id, detections), e.g. `COCOEvaluator.process`.

    Returns:
        dict: seconds per image of preprocess / network / decode (means) and images.
    """
    totals = {"preprocess": 0.0, "network": 0.0, "decode": 0.0}
    bar = progress_bar(len(items), "evaluate", "img", progress)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(read_image, items[0][1]) if len(items) else None
        for index, (image_id, _) in enumerate(items):
            image = pending.result()
            if index + 1 < len(items):
                pending = pool.submit(read_image, items[index + 1][1])
            found, timing = engine(image, min_score=min_score)
            on_image(image_id, found)
            for key in totals:
                totals[key] += timing[key]
            bar.update(1)
    bar.close()
    count = max(1, len(items))
    return {**{key: value / count for key, value in totals.items()}, "images": len(items)}


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


# Instruction sets int8 inference speed hangs on (issue 29): x86 flags (AVX2 / FMA for
# XNNPACK's and onnxruntime's int8 kernels, AVX-512 and its VNNI dot product, AVX-VNNI,
# AMX tiles) and Arm features (SDOT "asimddp", I8MM, SVE).
INT8_ISA = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm", "sve")


def cpu_info(cpuinfo=None):
    """The CPU's model, cores and the int8-relevant instruction sets it has.

    Args:
        cpuinfo: the text of /proc/cpuinfo; None reads it (Linux), or falls
            back to `platform.processor()` with no instruction sets known.

    Returns:
        dict: ``model`` (str), ``cores`` (os.cpu_count()), ``int8_isa``
        (the members of `INT8_ISA` present, in that order; None when unknown).
    """
    import platform

    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return {"model": platform.processor() or platform.machine() or "unknown", "cores": os.cpu_count(),
                    "int8_isa": None}
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())  # the first processor's
    model = fields.get("model name") or fields.get("hardware") or fields.get("cpu model") or (
        f"Arm CPU part {fields['cpu part']}" if "cpu part" in fields else platform.processor() or "unknown")
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return {"model": model, "cores": os.cpu_count(), "int8_isa": [f for f in INT8_ISA if f in flags]}


def format_cpu(info):
    """``cpu: MODEL, N cores; int8 instructions: avx2 fma ...`` (one line)."""
    isa = info.get("int8_isa")
    known = "unknown" if isa is None else (" ".join(isa) or "none of " + " ".join(INT8_ISA))
    return f"cpu: {info['model']}, {info['cores']} cores; int8 instructions: {known}"


def short_names(paths):
    """Names for a table of model files: the basenames, or where two basenames are alike the paths
    below the files' common folder (``runs/a/int8.tflite``, ``runs/b/int8.tflite``: ``a/int8.tflite``,
    ``b/int8.tflite``)."""
    names = [os.path.basename(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [os.path.relpath(os.path.abspath(p), root) for p in paths]


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
        peak_rss_mb, model_size_mb, cpu (`cpu_info`), gflops and
        achieved_gflops_per_s (network p50) when the sidecar has GFLOPs.
    """
    if warmup < 0 or runs < 1:
        raise SoloError(f"--warmup {warmup} / --runs {runs}: need warmup >= 0 and runs >= 1")
    image = _test_image(engine, image)
    load_before = _loadavg()
    time_calls(engine, image, warmup, min_score)
    cpu_start = time.process_time()
    found, timings = time_calls(engine, image, runs, min_score)
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
        "detections": int(len(found["scores"])),
        "min_score": min_score,
        "peak_rss_mb": peak_rss_mb(),
        "model_size_mb": round(size / 2**20, 3),
        "cpu": cpu_info(),
    }
    if meta.get("gflops"):
        result["gflops"] = meta["gflops"]
        result["achieved_gflops_per_s"] = round(meta["gflops"] / (result["network_ms"]["p50"] / 1000.0), 1)
    return result


def _test_image(engine, image):
    """`image`, or a fixed-seed random image of the engine's input size."""
    if image is not None:
        return image
    width, height = engine.input_size
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def time_calls(engine, image, runs, min_score):
    """`runs` calls of the engine: (the last detections, {part: [seconds per call]})."""
    timings = {"total": [], "preprocess": [], "network": [], "decode": []}
    found = None
    for _ in range(runs):
        found, timing = engine(image, min_score=min_score)
        for key in timings:
            timings[key].append(timing[key])
    return found, timings


def _peer_session(path, threads):
    """An onnxruntime session of a peer ONNX model and a fixed random input for it."""
    session = onnx_session(path, threads)
    inp = session.get_inputs()[0]
    if any(not isinstance(d, int) for d in inp.shape):
        raise SoloError(f"{path}: input {inp.shape} has no static size")
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
        shape}, ``detections``, ``threads``, ``loadavg_1m``, ``cpu`` (`cpu_info`).
    """
    if rounds < 1 or runs < 1 or warmup < 0:
        raise SoloError("--rounds and --runs must be >= 1, --warmup >= 0")
    image = _test_image(engine, image)
    sessions = {os.path.basename(p): _peer_session(p, engine.threads) for p in peers}
    for _ in range(warmup):
        found, _ = engine(image, min_score=min_score)
        for session, feed, _ in sessions.values():
            session.run(None, feed)
    load_before = _loadavg()
    results = []
    for _ in range(rounds):
        found, parts = time_calls(engine, image, runs, min_score)
        row = {"ours": {k: percentiles_ms(parts[k])["p50"] for k in ("total", "network", "decode")}, "peers": {},
               "ratio": {}}
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
            "loadavg_1m": [load_before, _loadavg()], "cpu": cpu_info()}


def format_compare(result):
    lines = [f"{os.path.basename(result['model'])} whole call ({result['detections']} detections > "
             f"{result['min_score']}) vs ONNX peers, network only; {result['threads']} threads, "
             f"p50 of {result['runs']} runs per model and round, load average "
             f"{result['loadavg_1m'][0]} -> {result['loadavg_1m'][1]}", "  " + format_cpu(result["cpu"])]
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
        "  " + format_cpu(result["cpu"]),
    ]
    if "gflops" in result:
        lines.append(f"  {result['gflops']:.2f} GFLOPs, {result['achieved_gflops_per_s']:.1f} GFLOP/s (network p50)")
    return "\n".join(lines)
