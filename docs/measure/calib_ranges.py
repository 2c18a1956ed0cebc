"""Probe: int8 activation ranges chosen by percentile or MSE instead of min/max.

Runs `keras-solo export` with the calibrate-only flatbuffer's ranges
replaced before `mlir_quantize`: a 2048-bin histogram of every network
tensor over the calibration images (within its calibrated min/max, read
through LiteRT with every tensor preserved), then

- pct P: the P-th percentile of the values (and the (100-P)-th where the
  range goes below 0);
- mse: both ends scaled by the factor in 0.10, 0.11, ..., 1.00 that
  minimises the expected squared error (clipping + uniform rounding) of an
  8-bit grid over the histogram;
- minmax: unchanged (the library's export).

    python docs/measure/calib_ranges.py pct 99.99 -- export --model M.keras --format tflite --quant int8 --out X.tflite
    python docs/measure/calib_ranges.py mse 0 -- export ...
"""
import sys
import time

import numpy as np

import keras_solo.export.convert as conv
from keras_solo.export.graph import network_tensor

METHOD, PARAM = sys.argv[1], float(sys.argv[2])
ARGS = sys.argv[4:]
STATE = {}
BINS = 2048


def ranges(calibrated, images):
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(calibrated, 0)
    sg = model.subgraphs[0]
    targets = {}
    for i, t in enumerate(sg.tensors):
        q = t.quantization
        if network_tensor(t.name.decode()) and q is not None and q.min is not None and len(q.min) == 1:
            targets[i] = (float(q.min[0]), float(q.max[0]))
    interp = Interpreter(model_content=calibrated, num_threads=2, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    hist = {i: np.zeros(BINS, np.int64) for i in targets}
    t0 = time.time()
    n = 0
    for image in images():
        interp.set_tensor(inp, image)
        interp.invoke()
        for i, (lo, hi) in targets.items():
            try:
                a = interp.get_tensor(i)
            except ValueError:
                continue
            if hi <= lo:
                continue
            h, _ = np.histogram(a.ravel(), bins=BINS, range=(lo, hi))
            hist[i] += h
        n += 1
    print(f"proto: histograms of {len(targets)} tensors over {n} images in {time.time() - t0:.0f} s", flush=True)
    changed = 0
    for i, (lo, hi) in targets.items():
        h = hist[i]
        if h.sum() == 0:
            continue
        edges = np.linspace(lo, hi, BINS + 1)
        if METHOD == "pct":
            c = np.cumsum(h) / h.sum()
            p = PARAM / 100
            new_lo = edges[np.searchsorted(c, 1 - p)] if lo < 0 else lo
            new_hi = edges[min(BINS, np.searchsorted(c, p) + 1)]
        elif METHOD == "mse":
            centres = (edges[:-1] + edges[1:]) / 2
            best = None
            for s in np.linspace(0.1, 1.0, 91):
                a, b = min(lo * s, 0.0), max(hi * s, 0.0)
                step = (b - a) / 255
                x = np.clip(centres, a, b)
                err = np.sum(h * ((centres - x) ** 2 + np.where(centres == x, step ** 2 / 12, 0)))
                if best is None or err < best[0]:
                    best = (err, a, b)
            new_lo, new_hi = best[1], best[2]
        else:
            continue
        new_lo, new_hi = min(new_lo, 0.0), max(new_hi, 0.0)
        if new_hi - new_lo < 1e-6:
            continue
        q = sg.tensors[i].quantization
        if (new_lo, new_hi) != (lo, hi):
            changed += 1
        q.min, q.max = np.array([new_lo], np.float32), np.array([new_hi], np.float32)
    print(f"proto: {METHOD} {PARAM}: {changed} of {len(targets)} ranges changed", flush=True)
    import flatbuffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


orig_strip = conv.strip_calibration_outside_network
orig_convert = conv.convert_tflite


def strip(calibrated):
    if METHOD != "minmax":
        calibrated = ranges(calibrated, STATE["calibration"])
    return orig_strip(calibrated)


def convert(saved, quant, *, calibration=None):
    STATE["calibration"] = calibration
    return orig_convert(saved, quant, calibration=calibration)


conv.strip_calibration_outside_network = strip
import keras_solo.export as ex  # noqa: E402
ex.convert_tflite = convert

from keras_solo.cli import main  # noqa: E402
sys.exit(main(ARGS))
