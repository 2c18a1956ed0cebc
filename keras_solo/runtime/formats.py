"""The export formats, in one table, and the sidecar every export carries.

`FORMATS` drives `keras-solo export` (its --format / --quant choices and
`ExportConfig.quant`), the engines that run a file (`engine.open_engine`)
and the benchmark's dispatch. A format with a `module` runs in this runtime;
`pip` names what to install for it.
"""

import json
import os

from keras_solo.errors import SoloError

FORMATS = {
    "tflite": {"suffix": ".tflite", "quants": ("fp32", "fp16", "int8-dynamic", "int8"),
               "module": "ai_edge_litert", "pip": "ai-edge-litert"},
    "onnx": {"suffix": ".onnx", "quants": ("fp32",), "module": "onnxruntime", "pip": "onnxruntime"},
    "saved_model": {"suffix": "_saved_model", "quants": ("fp32",), "module": None, "pip": "tensorflow"},
}
QUANTS = tuple(dict.fromkeys(q for spec in FORMATS.values() for q in spec["quants"]))
RUNNABLE = tuple(name for name, spec in FORMATS.items() if spec["module"])
OUTPUT_NAMES = ("scores", "labels", "masks", "valid")


def format_of(path):
    """The `FORMATS` key of a file this runtime runs, by its suffix, or None."""
    lower = os.fspath(path).lower()
    return next((name for name in RUNNABLE if lower.endswith(FORMATS[name]["suffix"])), None)


def sidecar_path(model_path):
    """The metadata file written next to an export: ``MODEL.json``."""
    return os.fspath(model_path).rstrip("/\\") + ".json"


def read_sidecar(model_path):
    """The sidecar written by `keras-solo export`, or None when there is none.

    Raises:
        SoloError: the sidecar exists but is not JSON or lacks input_size /
            class_names.
    """
    path = sidecar_path(model_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise SoloError(f"{path}: cannot read metadata ({type(e).__name__})") from None
    if not isinstance(meta, dict) or "input_size" not in meta or "class_names" not in meta:
        raise SoloError(f"{path}: not a keras-solo export sidecar (needs input_size and class_names)")
    return meta
