"""Engines: one exported model, called on RGB uint8 images of any size.

Every engine is letterbox (numpy + cv2) -> network (one run of the exported
graph, which ends in top-K and Matrix NMS and returns fixed-size scores,
labels, masks and valid) -> decode (numpy + cv2: undo the letterbox,
threshold). `open_engine` opens a `.tflite` (ai-edge-litert) or `.onnx`
(onnxruntime) file, importing that runtime only then; a `.keras` model is
adapted on the TensorFlow side (`keras_solo.engine.KerasEngine`).

The input size, class names and mask threshold come from the sidecar
`MODEL.json` written by `keras-solo export`; without it the input size is read
from the model, classes are numbered and the mask threshold is 0.5 (a warning
says so).
"""

import importlib
import os
import sys
import time

import numpy as np

from keras_solo.errors import SoloError
from keras_solo.runtime.detections import to_original
from keras_solo.runtime.formats import FORMATS, OUTPUT_NAMES, RUNNABLE, format_of, read_sidecar, sidecar_path
from keras_solo.runtime.image import letterbox_resize


class Engine:
    """Letterbox -> `network` -> undo the letterbox; subclasses give `network`.

    Attributes:
        path, format ("tflite" | "onnx" | "keras"), threads, meta (the
        sidecar, or {}), input_size (W, H), class_names (tuple; () numbers the
        labels), mask_thr.
    """

    format = None

    def __init__(self, path, *, input_size, class_names=(), mask_thr=0.5, threads=2, meta=None):
        self.path = os.fspath(path)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.class_names = tuple(class_names or ())
        self.mask_thr = float(mask_thr)
        self.threads = int(threads)
        self.meta = dict(meta or {})
        self._buffer = None

    def network(self, batch):
        """One run of the graph on a (1, H, W, 3) float32 batch: dict of numpy outputs."""
        raise NotImplementedError

    def preprocess(self, image):
        """(h, w, 3) uint8 RGB -> ((1, H, W, 3) float32, letterbox scale).

        The resized image is written into a float32 input buffer kept between
        calls (its padding is zeroed only where the previous image covered
        it), instead of a fresh canvas converted each call.
        """
        width, height = self.input_size
        resized, scale = letterbox_resize(image, self.input_size)
        new_h, new_w = resized.shape[:2]
        if self._buffer is None:
            self._buffer = np.zeros((1, height, width, 3), np.float32)
            self._filled = (height, width)
        buffer = self._buffer
        old_h, old_w = self._filled
        if old_h > new_h:
            buffer[0, new_h:old_h] = 0.0
        if old_w > new_w:
            buffer[0, :old_h, new_w:old_w] = 0.0
        buffer[0, :new_h, :new_w] = resized
        self._filled = (new_h, new_w)
        return buffer, scale

    def decode(self, outputs, orig_size, scale, min_score=0.0):
        """Fixed-size outputs (batch 1) -> detections in original pixels."""
        one = {name: np.asarray(outputs[name])[0] for name in OUTPUT_NAMES}
        width, height = self.input_size
        return to_original(one, input_size=(height, width), orig_size=orig_size, scale=scale,
                           mask_thr=self.mask_thr, min_score=min_score)

    def __call__(self, image, min_score=0.0):
        """Detections of one (h, w, 3) uint8 RGB image, and the seconds of each part.

        Returns:
            (dict scores, labels, masks (N, h, w) bool, boxes (N, 4) COCO xywh;
            dict preprocess, network, decode, total).
        """
        t0 = time.perf_counter()
        batch, scale = self.preprocess(image)
        t1 = time.perf_counter()
        outputs = self.network(batch)
        t2 = time.perf_counter()
        found = self.decode(outputs, image.shape[:2], scale, min_score)
        t3 = time.perf_counter()
        return found, {"preprocess": t1 - t0, "network": t2 - t1, "decode": t3 - t2, "total": t3 - t0}


def import_runtime(fmt, path):
    """The Python module that runs `fmt`, or a one-line SoloError naming what to install."""
    spec = FORMATS[fmt]
    try:
        return importlib.import_module(spec["module"])
    except ImportError:
        raise SoloError(f"{path}: running a {spec['suffix']} model needs {spec['pip']}, which is not installed "
                        f"(pip install {spec['pip']})") from None


class TFLiteEngine(Engine):
    """A `.tflite` file on ai-edge-litert's interpreter."""

    format = "tflite"

    def __init__(self, path, threads=2, meta=None):
        import_runtime("tflite", path)
        from ai_edge_litert.interpreter import Interpreter

        with open(path, "rb") as f:
            head = f.read(8)
        if len(head) < 8 or head[4:8] != b"TFL3":
            raise SoloError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise SoloError(f"{path}: cannot load TFLite model ({str(e).splitlines()[0][:160]})") from None
        details = self.interpreter.get_input_details()
        if len(details) != 1:
            raise SoloError(f"{path}: expected one image input, the model has {len(details)}")
        self._input_index = details[0]["index"]
        signatures = self.interpreter.get_signature_list()
        if signatures:
            key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
            outputs = self.interpreter.get_signature_runner(key).get_output_details()
            self._outputs = {name: d["index"] for name, d in outputs.items()}
        else:
            self._outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        shape = tuple(int(v) for v in details[0]["shape"])
        _init_checked(self, path, shape, np.dtype(details[0]["dtype"]), tuple(self._outputs), threads, meta)

    def network(self, batch):
        self.interpreter.set_tensor(self._input_index, batch)
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(index) for name, index in self._outputs.items()}


class OnnxEngine(Engine):
    """An `.onnx` file on onnxruntime's CPU provider."""

    format = "onnx"

    def __init__(self, path, threads=2, meta=None):
        self.session = onnx_session(path, threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise SoloError(f"{path}: expected one image input, the model has {len(inputs)}")
        self._input_name = inputs[0].name
        self._output_names = tuple(o.name for o in self.session.get_outputs())
        shape = tuple(d if isinstance(d, int) else -1 for d in inputs[0].shape)
        dtype = np.dtype(np.float32) if inputs[0].type == "tensor(float)" else np.dtype(object)
        _init_checked(self, path, shape, dtype, self._output_names, threads, meta)

    def network(self, batch):
        return dict(zip(self._output_names, self.session.run(list(self._output_names), {self._input_name: batch})))


def onnx_session(path, threads):
    """An onnxruntime CPU session with `threads` intra-op threads and no busy-waiting.

    Spinning workers take the cores the numpy decoding (and anything else on a
    small CPU) needs; on the 2-core test machine spinning doubled the ONNX
    latency under load.
    """
    ort = import_runtime("onnx", path)
    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise SoloError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:160]})") from None


def _init_checked(engine, path, shape, dtype, output_names, threads, meta):
    """Checks an exported file's input and outputs against its sidecar, then sets up `Engine`."""
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or dtype != np.float32:
        raise SoloError(f"{path}: input is {list(shape)} {dtype}; expected a (1, H, W, 3) float32 image")
    if meta is not None:
        width, height = (int(v) for v in meta["input_size"])
        if (shape[1], shape[2]) != (height, width):
            raise SoloError(f"{path}: input is {shape[2]}x{shape[1]} (WxH) but its metadata "
                            f"{os.path.basename(sidecar_path(path))} says {width}x{height}")
        class_names, mask_thr = meta["class_names"], float(meta.get("mask_thr", 0.5))
    else:
        height, width = shape[1], shape[2]
        print(f"warning: {sidecar_path(path)} not found; input {width}x{height} from the model, "
              "numbered classes, mask threshold 0.5", file=sys.stderr)
        class_names, mask_thr = (), 0.5
    if height <= 0 or width <= 0:
        raise SoloError(f"{path}: input has no static size ({list(shape)})")
    missing = [n for n in OUTPUT_NAMES if n not in output_names]
    if missing:
        raise SoloError(f"{path}: outputs {list(output_names)} lack {missing}; not a keras-solo export")
    Engine.__init__(engine, path, input_size=(width, height), class_names=class_names, mask_thr=mask_thr,
                    threads=threads, meta=meta)


ENGINES = {"tflite": TFLiteEngine, "onnx": OnnxEngine}


def sidecar_threads(model_path, default=2):
    """The threads the export was made for (its sidecar's export_config), else `default`."""
    meta = read_sidecar(model_path) if os.path.exists(model_path) else None
    return int(((meta or {}).get("export_config") or {}).get("threads", default))


def open_engine(model_path, threads=None):
    """The engine of an exported `.tflite` / `.onnx` file (format by suffix).

    Args:
        model_path: the file written by `keras-solo export` (its sidecar beside it).
        threads: CPU threads; default the sidecar's export threads, else 2.

    Raises:
        SoloError: a missing or unreadable model file, a model whose input is
            not (1, H, W, 3) float32 or not the sidecar's size, outputs that are
            not scores / labels / masks / valid, or its runtime not installed.
    """
    path = os.fspath(model_path)
    if not os.path.exists(path):
        raise SoloError(f"{path}: no such model file")
    fmt = format_of(path)
    if os.path.isdir(path) or fmt is None:
        suffixes = " or ".join(FORMATS[name]["suffix"] for name in RUNNABLE)
        raise SoloError(f"{path}: {'is a folder; ' if os.path.isdir(path) else ''}expected a {suffixes} file")
    if threads is None:
        threads = sidecar_threads(path)
    if int(threads) < 1:
        raise SoloError(f"--threads {threads}: must be >= 1")
    meta = read_sidecar(path)
    return ENGINES[fmt](path, threads=int(threads), meta=meta)
