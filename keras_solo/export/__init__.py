"""`keras-solo export`: Keras -> TFLite (fp32 / fp16 / int8-dynamic / int8), ONNX and SavedModel.

- `graph`: the export graph every format is converted from (and the
  TensorFlow reference the files are checked against).
- `calibration`: int8 calibration images and the network-only statistics.
- `convert`: TFLite / ONNX / SavedModel conversion.
- `readback`: ops, GFLOPs and the int8 / float op split of a written file.

`FORMATS` (`keras_solo.runtime.formats`) lists each format's suffix and quant
modes. Every export writes, next to the model file, a sidecar `MODEL.json`
(e.g. `best_int8.tflite.json`) with what the TF-free runtime needs (input
size, class names, thresholds, output names and shapes) plus the resolved
export config, the model config, the op precision report and the graph's
GFLOPs. Files are written under a temporary name and renamed; an existing
output is refused without `overwrite`. The command (`export_request` for
its arguments, then `keras_solo.export_model`) and the Python API share one
path.
"""

import os
import shutil
import tempfile
import time

from keras_solo.errors import SoloError, check_output, write_json
from keras_solo.export.calibration import calibration_images
from keras_solo.export.convert import (
    ONNX_OPSET,
    check_tflite_loads,
    convert_onnx,
    convert_tflite,
    fix_onnx_resizes,
    write_archive,
)
from keras_solo.export.graph import (
    INPUT_NAME,
    NETWORK_SCOPE,
    export_plan,
    input_signature,
    reference_outputs,
    resize_model,
    serving_function,
    use_export_decoding,
)
from keras_solo.export.readback import (
    format_op_report,
    onnx_flops,
    onnx_has_runtime_conv_weights,
    op_report,
    tflite_flops,
    tflite_graph,
)
from keras_solo.runtime.formats import FORMATS, OUTPUT_NAMES, sidecar_path

__all__ = [
    "FORMATS", "INPUT_NAME", "NETWORK_SCOPE", "ONNX_OPSET", "OUTPUT_NAMES", "calibration_images", "check_format",
    "check_tflite_loads", "convert_onnx", "convert_tflite", "default_output", "export_model", "export_request",
    "export_plan", "fix_onnx_resizes", "format_export_summary", "format_op_report", "input_signature", "onnx_flops",
    "onnx_has_runtime_conv_weights", "op_report", "reference_outputs", "resize_model",
    "serving_function", "sidecar_path", "tflite_flops", "tflite_graph", "use_export_decoding",
]


def check_format(fmt, quant):
    """Raises SoloError unless `fmt` is a `FORMATS` key that supports `quant`."""
    if fmt not in FORMATS:
        raise SoloError(f"format {fmt!r}: not one of {', '.join(FORMATS)}")
    if quant not in FORMATS[fmt]["quants"]:
        raise SoloError(f"format {fmt} supports quant {', '.join(FORMATS[fmt]['quants'])}, not {quant!r}"
                        + ("; build fp16/int8 TensorRT engines from the ONNX file with export/build_tensorrt.py"
                           if fmt == "onnx" else ""))


def default_output(model_path, fmt, quant):
    stem = os.path.splitext(os.path.abspath(model_path))[0]
    if fmt == "tflite":
        return f"{stem}_{quant}.tflite"
    return stem + FORMATS[fmt]["suffix"]


def _check_outputs(path, overwrite):
    for target in (path, sidecar_path(path)):
        if os.path.exists(target) and not overwrite:
            raise SoloError(f"{target}: already exists; use --overwrite or another --out")


def _replace(tmp, path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    os.replace(tmp, path)


def _size_bytes(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)
    return os.path.getsize(path)


def export_model(model, path, *, fmt="tflite", quant="fp32", top_k=100, calibration=None,
                 calibration_info=None, export_config=None, source=None, overwrite=False, progress=print):
    """Exports a built `SOLO` to one file (or SavedModel folder) plus its sidecar.

    Args:
        model: a built `SOLO` (at the input size wanted; see `resize_model`).
        path: output file (``.tflite`` / ``.onnx``) or SavedModel folder.
        fmt: a key of `FORMATS`.
        quant: one of ``FORMATS[fmt]["quants"]``.
        top_k: candidate budget split over the levels.
        calibration: for int8, a callable returning an iterator of
            (1, H, W, 3) float32 images.
        calibration_info: what the calibration images were (for the sidecar).
        export_config: the resolved `ExportConfig` (for the sidecar).
        source: the `.keras` file exported (for the sidecar).
        overwrite: replace an existing output. Defaults to False.
        progress: callable for progress lines (None = silent).

    Returns:
        The sidecar metadata dict (also written to ``MODEL.json``).

    Raises:
        SoloError: unknown format / quant, an existing output without
            ``overwrite``, int8 without calibration images.
    """
    import tensorflow as tf

    from keras_solo.config import ExportConfig, config_to_dict

    check_format(fmt, quant)
    if quant == "int8" and calibration is None:
        raise SoloError("int8 needs calibration images: a training COCO JSON (--calib-data FILE.json; "
                        "calibration= in Python)")
    path = os.path.abspath(os.fspath(path))
    _check_outputs(path, overwrite)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    say = progress or (lambda *_: None)
    plan = export_plan(model, top_k)
    fn = serving_function(model, top_k=top_k)
    tmp = f"{path}.tmp{os.getpid()}"
    start = time.perf_counter()
    meta_extra = {}
    try:
        if fmt == "onnx":
            say(f"export: tracing and converting to ONNX opset {ONNX_OPSET} (tf2onnx)")
            convert_onnx(fn, model, tmp)
            meta_extra["gflops"] = round(onnx_flops(tmp) / 1e9, 4)
            meta_extra["runtime_conv_weights"] = onnx_has_runtime_conv_weights(tmp)
        else:
            with tempfile.TemporaryDirectory(prefix="keras_solo_export_") as work:
                saved = tmp if fmt == "saved_model" else os.path.join(work, "saved_model")
                say("export: tracing the export graph (SavedModel)")
                write_archive(model, tf.function(fn), saved)
                if fmt == "tflite":
                    say(f"export: converting to TFLite {quant}"
                        + (" (calibrating the network on the representative images)" if quant == "int8" else ""))
                    data = convert_tflite(saved, quant, calibration=calibration)
                    check_tflite_loads(data, quant)
                    graph = tflite_graph(data)
                    meta_extra["gflops"] = round(tflite_flops(graph) / 1e9, 4)
                    meta_extra["ops"] = op_report(graph)
                    with open(tmp, "wb") as f:
                        f.write(data)
        _replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
    export_config = export_config or ExportConfig(top_k=top_k, quant=quant if fmt == "tflite" else "fp32")
    width, height = model.input_size
    meta = {
        "format": fmt,
        "quant": quant,
        "file": os.path.basename(path),
        "size_bytes": _size_bytes(path),
        "source_model": os.path.abspath(source) if source else None,
        "runtime": FORMATS[fmt]["pip"],
        "input": {"name": INPUT_NAME, "shape": [1, height, width, 3], "dtype": "float32",
                  "layout": "NHWC, RGB 0..255, letterboxed: top-left, zero padding bottom/right"},
        "input_size": [width, height],
        "class_names": list(model.class_names),
        "mask_thr": float(model.decoder.mask_thr),
        "score_thr": float(model.decoder.score_thr),
        "update_thr": float(model.decoder.update_thr),
        "nms": {"kernel": model.decoder.nms_kernel, "sigma": float(model.decoder.nms_sigma),
                "pool": int(model.decoder.nms_pool),
                "in_graph": True},
        "top_k": int(top_k),
        "candidates_per_level": plan["per_level"],
        "num_candidates": plan["num_candidates"],
        "max_detections": plan["max_detections"],
        "mask_size": plan["mask_size"],
        "outputs": {
            "scores": {"shape": [1, plan["max_detections"]], "dtype": "float32"},
            "labels": {"shape": [1, plan["max_detections"]], "dtype": "int32"},
            "masks": {"shape": [1, plan["max_detections"]] + plan["mask_size"], "dtype": "float32"},
            "valid": {"shape": [1, plan["max_detections"]], "dtype": "bool"},
        },
        "calibration": calibration_info if quant == "int8" else None,
        "export_seconds": round(time.perf_counter() - start, 1),
        "export_config": config_to_dict(export_config),
        "model_config": model.get_config(),
    }
    meta.update(meta_extra)
    write_json(sidecar_path(path), meta, what="export metadata", default=str)
    return meta


def export_request(args):
    """`keras-solo export`'s arguments resolved against the run's config.yaml
    next to the model: ``(model, options)`` for `keras_solo.export_model(model,
    **options)`, the model loaded, resized (``--imgsz``) and with its ``--set``
    inference overrides; the output checked before the model loads."""
    from keras_solo.builders import resolve_path
    from keras_solo.config import ExportConfig, config_from_dict, config_to_dict, load_run_config
    from keras_solo.model.solo import load_model

    config = load_run_config(args.model)
    defaults = config.export if config is not None else ExportConfig()
    fmt = args.format
    quant = args.quant or (defaults.quant if fmt == "tflite" else "fp32")
    check_format(fmt, quant)
    values = config_to_dict(defaults)
    values.update({"quant": quant,
                   "calib_images": args.calib_images if args.calib_images is not None else defaults.calib_images})
    if args.top_k is not None:
        values["top_k"] = args.top_k
    export_config = config_from_dict({"export": values}, "export arguments").export

    out = args.out or default_output(args.model, fmt, quant)
    check_output(out, folder=fmt == "saved_model")
    _check_outputs(os.path.abspath(out), args.overwrite)
    calib_json = image_root = None
    if quant == "int8":
        calib_json = args.calib_data
        image_root = getattr(args, "calib_root", None)
        if calib_json is None and image_root is not None:
            raise SoloError("--calib-root needs --calib-data (the JSON whose file names it resolves)")
        if calib_json is None and config is not None:
            calib_json = resolve_path(config.data.train_json, os.path.dirname(os.path.abspath(args.model)))
            image_root = config.data.train_images or None
        if not calib_json:
            raise SoloError("--quant int8 needs --calib-data FILE.json (training images, COCO JSON); "
                            "no config.yaml next to the model names one")
    model = use_export_decoding(resize_model(load_model(args.model), args.imgsz), export_config)
    if getattr(args, "set", None):  # after the export's own settings: the command line wins
        from keras_solo.engine import apply_eval_overrides

        apply_eval_overrides(model, args.set)
    return model, dict(path=out, format=fmt, quant=quant, top_k=export_config.top_k, calibration=calib_json,
                       images=image_root, calibration_images=export_config.calib_images, overwrite=args.overwrite,
                       source=args.model, export_config=export_config, progress=print)


def format_export_summary(meta, path):
    """The lines `keras-solo export` prints about the file it wrote."""
    size_mb = meta["size_bytes"] / 2**20
    width, height = meta["input_size"]
    lines = [f"wrote {os.path.abspath(path)} ({size_mb:.2f} MiB, {meta['format']} {meta['quant']}, input "
             f"1x{height}x{width}x3 float32, {meta['num_candidates']} candidates -> {meta['max_detections']} "
             f"detections, {meta.get('gflops', float('nan')):.2f} GFLOPs) and {sidecar_path(os.path.abspath(path))}"]
    if meta.get("ops"):
        lines.append("ops by precision:\n" + format_op_report(meta["ops"]))
    return "\n".join(lines)
