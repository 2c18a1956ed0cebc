"""Keras -> TFLite (fp32 / fp16 / int8-dynamic / int8), ONNX and SavedModel.

One export graph serves every format. It is built from a loaded `SOLO`:

    images (1, H, W, 3) float32 RGB 0..255, letterboxed (the model normalises)
      -> model(images)                               [scope "network/"]
      -> model.candidates(outputs, num_per_level=K_l)
           per level: sigmoid, SOLO's 2x2 point NMS, top-K_l (cell, class)
           pairs, masks for those K_l cells only: the gathered 1x1 kernel
           columns W[:, k] and attention rows V_k as an einsum (BATCH_MATMUL /
           MatMul with a run-time right operand, never a convolution with
           run-time weights, which TensorRT cannot build: onnx-tensorrt #609),
           resized to the finest mask size
      -> postprocess.decode: maskness, Matrix NMS, top max_det
      -> scores (1, D) float32, labels (1, D) int32 (-1 = none),
         masks (1, D, Hm0, Wm0) float32 probabilities, valid (1, D) bool

`K_l = split_nms_pre(top_k, grids, C)` (the candidate budget split over levels
in proportion to S_l^2), `N = sum(K_l)`, `D = min(N, model.max_per_img)`.
Every shape is static and time and memory do not grow with S^2.

Decisions (measured on TF 2.21 / Keras 3.15 / ai-edge-litert 2.3):

- Input float32 RGB 0..255, not uint8: it is the model's own contract, the
  runner letterboxes into a float buffer anyway, and an int8 model then keeps
  one QUANTIZE at the input instead of a CAST + QUANTIZE.
- Matrix NMS and top-K run in the graph: every op of `postprocess.decode`
  converts to TFLite builtins (TOPK_V2, GATHER, BATCH_MATMUL, SELECT_V2, EXP,
  REDUCE_MIN ...) and to ONNX opset 17. Only undoing the letterbox (resize to
  the original image, threshold) runs in the runner, in numpy + cv2
  (`keras_solo.detections.to_original`).
- Freezing: the graph is written with `keras.export.ExportArchive` (which
  tracks every model variable) to a SavedModel and converted with
  `TFLiteConverter.from_saved_model`, keeping the named signature
  (images -> labels, masks, scores, valid). ONNX goes through
  `tf2onnx.convert.from_function` (it freezes the function itself), opset 17,
  checked with `onnx.checker.check_model(full_check=True)`.
- int8 is mixed int8 / float on purpose. The network (backbone, FPN, heads,
  attention projection: every tensor under the "network/" name scope) is full
  integer, calibrated on `calib_images` training images drawn through the
  project's own pipeline (`load_coco` + `build_dataset(training=False)`).
  Everything after it stays float32: the category sigmoid, point NMS, top-K,
  the gathered mask matmuls, Matrix NMS. Quantising them is wrong rather than
  slow (int8 top-K makes ties of close scores, int8 intersection counts break
  the IoUs, and the converter cannot even quantise point NMS: the -1 padding
  of a [0, 1] sigmoid violates PADV2's same-scale rule). To get that split the
  model is calibrated first (`_experimental_calibrate_only`), the calibration
  statistics of every tensor outside "network/" are removed from the
  flatbuffer, and `mlir_quantize` runs with those nodes and TOPK_V2
  deny-listed. `op_report` lists which ops compute in int8 and which in float
  (it is saved in the sidecar and printed).
- fp16 stores weights in float16 (DEQUANTIZE to float32 at load; XNNPACK runs
  in fp32 on CPUs without native fp16). int8-dynamic stores int8 weights and
  quantises activations on the fly: its convolutions are hybrid (int8
  weights, float32 in and out, so `op_report` lists them as float), and the
  gathered 1x1 mask kernel columns are gathered from the int8 weight table
  (GATHER on int8, then DEQUANTIZE).
- ONNX and SavedModel are fp32 only; an fp16 / int8 TensorRT engine is built
  from the ONNX file by `export/build_tensorrt.py`.

Every export writes, next to the model file, a sidecar `MODEL.json` (e.g.
`best_int8.tflite.json`) with what the TF-free runner needs (input size,
class names, thresholds, output names and shapes) plus the resolved export
config, the model config, the op precision report and the graph's GFLOPs.
Files are written under a temporary name and renamed; an existing output is
refused without `overwrite`.

GFLOPs are 2 x multiply-accumulates of the convolution / matmul ops of the
exported graph (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, BATCH_MATMUL in
TFLite; Conv, MatMul, Gemm in ONNX), counted from the static shapes of the
file itself. Element-wise ops, resizes and reductions are not counted.

Reference: SOLO, arXiv:1912.04488; SOLOv2 (Matrix NMS), arXiv:2003.10152.
"""

import collections
import os
import shutil
import tempfile
import time
import warnings

import numpy as np

from keras_solo.errors import SoloError, check_output, write_json

# One table drives export and benchmark: format -> file suffix, quant modes, runtime.
FORMATS = {
    "tflite": {"suffix": ".tflite", "quants": ("fp32", "fp16", "int8-dynamic", "int8"), "runtime": "ai-edge-litert"},
    "onnx": {"suffix": ".onnx", "quants": ("fp32",), "runtime": "onnxruntime"},
    "saved_model": {"suffix": "_saved_model", "quants": ("fp32",), "runtime": "tensorflow"},
}
OUTPUT_NAMES = ("scores", "labels", "masks", "valid")
INPUT_NAME = "images"
NETWORK_SCOPE = "network"
ONNX_OPSET = 17


# ---------------------------------------------------------------------------
# The export graph

def export_plan(model, top_k):
    """The fixed output sizes of the export graph.

    Args:
        model: a built `SOLO`.
        top_k: candidate budget over all levels.

    Returns:
        dict: ``per_level`` (K_l per level, proportional to S_l^2),
        ``num_candidates`` N = sum(K_l), ``max_detections`` D = min(N,
        model.max_per_img), ``mask_size`` (Hm0, Wm0), ``input_size`` (W, H).
    """
    from keras_solo.model.solo import split_nms_pre

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise SoloError(f"--top-k {top_k!r}: must be an integer >= 1")
    per_level = [int(k) for k in split_nms_pre(top_k, model.grids, model.num_classes)]
    num = sum(per_level)
    return {
        "per_level": per_level,
        "num_candidates": num,
        "max_detections": min(num, int(model.max_per_img)),
        "mask_size": [int(v) for v in model.output_mask_size],
        "input_size": [int(v) for v in model.input_size],
    }


def serving_function(model, *, top_k):
    """The export graph as a Python function of a (1, H, W, 3) image batch.

    Args:
        model: a built `SOLO`.
        top_k: candidate budget (see `export_plan`).

    Returns:
        ``fn(images) -> {"scores", "labels", "masks", "valid"}`` with the
        shapes of the module docstring. Trace it with ``tf.function``.
    """
    import tensorflow as tf

    plan = export_plan(model, top_k)

    def serve(images):
        with tf.name_scope(NETWORK_SCOPE):
            outputs = model(images, training=False)
        with tf.name_scope("decode"):  # scopes decode/candidates, decode/nms: litert_profile's blocks
            decoded = model.decode(outputs, num_per_level=plan["per_level"],
                                   max_per_img=plan["max_detections"])
        return {name: decoded[name] for name in OUTPUT_NAMES}

    return serve


def input_signature(model):
    import tensorflow as tf

    width, height = model.input_size
    return [tf.TensorSpec((1, height, width, 3), tf.float32, name=INPUT_NAME)]


def reference_outputs(model, images, *, top_k):
    """The export graph run by TensorFlow/Keras (the parity reference).

    Args:
        images: (B, H, W, 3) float32 RGB 0..255 at the model's input size.

    Returns:
        dict of numpy arrays, as the exported files return them.
    """
    import tensorflow as tf

    fn = tf.function(serving_function(model, top_k=top_k), reduce_retracing=True)
    images = np.asarray(images, np.float32)
    results = [{k: v.numpy() for k, v in fn(tf.constant(images[i:i + 1])).items()} for i in range(len(images))]
    return {k: np.concatenate([r[k] for r in results]) for k in OUTPUT_NAMES}


def resize_model(model, imgsz):
    """The same weights at another input size (W, H); the model itself when equal.

    Raises:
        SoloError: a size that is not a positive multiple of 32 (64 with P6
            and ``head_resize: none``).
    """
    if imgsz is None or tuple(imgsz) == tuple(model.input_size):
        return model
    from keras_solo.model.solo import SOLO

    width, height = (int(v) for v in imgsz)
    step = 64 if (model.head_resize == "none" and "P6" in model.levels) else 32
    if width <= 0 or height <= 0 or width % step or height % step:
        raise SoloError(f"--imgsz {width}x{height}: width and height must be positive multiples of {step}")
    config = model.get_config()
    config["input_size"] = [width, height]
    resized = SOLO.from_config(config)
    resized.build()
    resized.set_weights(model.get_weights())
    return resized


# ---------------------------------------------------------------------------
# Calibration data (int8)

def calibration_images(coco, input_size, num_images, *, seed=0):
    """Yields up to ``num_images`` (1, H, W, 3) float32 images for int8 calibration.

    Drawn through the project's own pipeline (`build_dataset(training=False)`,
    shuffled with ``seed``): the same letterbox the runner applies.
    """
    from keras_solo.data.pipeline import build_dataset

    with warnings.catch_warnings():  # instance slots are unused: images only
        warnings.simplefilter("ignore")
        dataset = build_dataset(coco, image_size=tuple(input_size), max_instances=1, mask_stride=8,
                                batch_size=1, training=False, shuffle=True, seed=seed)
    for images, _ in dataset.take(num_images):
        yield images.numpy().astype(np.float32)


def _run_config(model_path):
    """The run's resolved config.yaml next to a checkpoint, or None."""
    from keras_solo.config import load_config

    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.yaml")
    if not os.path.exists(path):
        return None
    try:
        return load_config(path)
    except SoloError:
        return None


# ---------------------------------------------------------------------------
# Conversions

def _write_archive(model, fn, path):
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", fn, input_signature=input_signature(model))
    archive.write_out(path, verbose=False)


def _network_tensor(name):
    return name.startswith(NETWORK_SCOPE + "/")


def _strip_calibration_outside_network(calibrated):
    """Removes calibration statistics from every tensor outside "network/".

    Returns:
        (model bytes, names of the ops outside the network) for `mlir_quantize`.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(calibrated, 0)
    denylist = set()
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            if not _network_tensor(tensor.name.decode()) and tensor.quantization is not None:
                tensor.quantization = None
        for op in subgraph.operators or ():
            names = [subgraph.tensors[i].name.decode() for i in op.outputs]
            if names and not all(_network_tensor(n) for n in names):
                denylist.update(names)
                denylist.add(";".join(names))  # multi-output ops carry a fused location
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), sorted(denylist)


def convert_tflite(saved_model_dir, quant, *, calibration=None):
    """SavedModel -> TFLite flatbuffer bytes.

    Args:
        quant: "fp32" | "fp16" | "int8-dynamic" | "int8".
        calibration: for int8, a callable returning an iterator of
            (1, H, W, 3) float32 images.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if quant == "fp32":
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quant == "fp16":
        converter.target_spec.supported_types = [tf.float16]
        return converter.convert()
    if quant == "int8-dynamic":
        return converter.convert()
    if quant != "int8":
        raise SoloError(f"--quant {quant!r}: not one of {', '.join(FORMATS['tflite']['quants'])}")
    if calibration is None:
        raise SoloError("--quant int8 needs calibration images (--calib-data)")
    from tensorflow.lite.python import convert as tflite_convert

    converter.representative_dataset = lambda: ([image] for image in calibration())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter._experimental_calibrate_only = True  # noqa: SLF001 (the documented selective-quantisation path)
    calibrated = converter.convert()
    calibrated, denylist = _strip_calibration_outside_network(calibrated)
    return tflite_convert.mlir_quantize(
        calibrated, fully_quantize=False, input_data_type=tf.float32, output_data_type=tf.float32,
        denylisted_ops=["TOPK_V2"], denylisted_nodes=denylist)


def convert_onnx(fn, model, path):
    """Writes the export graph as ONNX (opset 17) and checks it."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    function = tf.function(fn, input_signature=input_signature(model))
    model_proto, _ = tf2onnx.convert.from_function(function, input_signature=input_signature(model),
                                                   opset=ONNX_OPSET)
    model_proto = fix_onnx_resizes(model_proto)
    onnx.save(model_proto, path)
    onnx.checker.check_model(path, full_check=True)


def fix_onnx_resizes(model_proto):
    """Makes tf2onnx's Resize nodes exact: static ``sizes``, no deprecated modes.

    tf2onnx writes a static resize as ``scales = out / in`` in float32, and
    ONNX sizes the output as ``floor(in * scale)``: 20 * float32(0.7) is
    13.99999, so a 20 -> 14 resize (the edge preset's S = 14 grid) becomes
    13 and the model does not load. Each such Resize gets ``sizes`` (the
    rounded product, what TensorFlow resized to) instead. Nearest-neighbour
    resizes by integer factors get ``asymmetric`` coordinates, exactly TF's
    half-pixel-centre nearest for those factors, instead of the deprecated
    ``tf_half_pixel_for_nn`` (which TensorRT does not take).

    Returns:
        the fixed ``onnx.ModelProto`` (the same object).
    """
    from onnx import numpy_helper, shape_inference

    graph = model_proto.graph
    initializers = {init.name: init for init in graph.initializer}
    constants = {node.output[0]: node for node in graph.node if node.op_type == "Constant"}

    def const_value(name):
        if name in initializers:
            return numpy_helper.to_array(initializers[name])
        if name in constants:
            return numpy_helper.to_array(constants[name].attribute[0].t)
        return None

    pending = [n for n in graph.node if n.op_type == "Resize" and len(n.input) == 3 and n.input[2]]
    for node in pending:
        scales = const_value(node.input[2])
        mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "nearest")
        if (scales is not None and mode == "nearest" and np.all(scales >= 1)
                and np.allclose(scales, np.round(scales))):
            for attr in node.attribute:
                if attr.name == "coordinate_transformation_mode" and attr.s == b"tf_half_pixel_for_nn":
                    attr.s = b"asymmetric"
    while pending:
        # Fix only resizes with no pending resize upstream: shapes below one are still wrong.
        pending_names = {node.name for node in pending}
        tainted = set()
        for node in graph.node:  # ONNX graphs are topologically sorted
            if node.name in pending_names or any(name in tainted for name in node.input):
                tainted.update(node.output)
        inferred = shape_inference.infer_shapes(model_proto)
        shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                  for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
        left = []
        for node in pending:
            scales = const_value(node.input[2])
            shape = shapes.get(node.input[0])
            if scales is None or node.input[0] in tainted or not shape or any(d is None for d in shape):
                left.append(node)
                continue
            sizes = np.round(np.asarray(shape, np.float64) * scales.astype(np.float64)).astype(np.int64)
            name = f"{node.name}_static_sizes"
            graph.initializer.append(numpy_helper.from_array(sizes, name))
            data, roi = node.input[0], node.input[1]
            del node.input[:]
            node.input.extend([data, roi, "", name])  # X, roi, (no scales), sizes
        if len(left) == len(pending):
            break  # shapes not static: leave the rest as tf2onnx wrote them
        pending = left
    return model_proto


# ---------------------------------------------------------------------------
# Inspecting the exported files

def check_tflite_loads(model_bytes, quant):
    """Loads a converted flatbuffer in LiteRT (with XNNPACK, as the runner does).

    Raises:
        SoloError: the runtime rejects the model. Seen with int8 on an
            untrained backbone whose activations vanish (calibrated scales of
            ~1e-9 that XNNPACK refuses); calibrate a trained model instead.
    """
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_content=model_bytes, num_threads=1).allocate_tensors()
    except (RuntimeError, ValueError) as e:
        hint = (" (int8: XNNPACK refuses degenerate calibrated scales, e.g. from an untrained backbone whose "
                "activations vanish; export a trained model)" if quant == "int8" else "")
        raise SoloError(f"the converted {quant} TFLite model does not load in LiteRT: "
                        f"{str(e).splitlines()[0][:160]}{hint}") from None


def tflite_graph(model_bytes):
    """Ops and tensors of a TFLite flatbuffer (main subgraph).

    Returns:
        dict: ``ops`` list of {op, inputs, outputs, options}; ``tensors`` list of
        {name, shape, dtype, constant}.

    Raises:
        SoloError: not a TFLite flatbuffer.
    """
    from ai_edge_litert import schema_py_generated as schema

    if len(model_bytes) < 8 or model_bytes[4:8] != b"TFL3":
        raise SoloError("not a TFLite flatbuffer (no TFL3 identifier)")
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(model_bytes, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        codes.append(op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"))
    graph = model.Subgraphs(0)
    tensors = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        buffer = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
        constant = buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0)
        shape = [int(v) for v in t.ShapeAsNumpy()] if t.ShapeLength() else []
        tensors.append({"name": t.Name().decode(), "shape": shape,
                        "dtype": type_names.get(t.Type(), str(t.Type())), "constant": bool(constant)})
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        options = {}
        has_bmm_options = op.BuiltinOptionsType() == schema.BuiltinOptions.BatchMatMulOptions
        if codes[op.OpcodeIndex()] == "BATCH_MATMUL" and has_bmm_options:
            table = op.BuiltinOptions()
            bmm = schema.BatchMatMulOptions()
            bmm.Init(table.Bytes, table.Pos)
            options = {"adj_x": bool(bmm.AdjX()), "adj_y": bool(bmm.AdjY())}
        ops.append({"op": codes[op.OpcodeIndex()],
                    "inputs": [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else [],
                    "outputs": [int(v) for v in op.OutputsAsNumpy()] if op.OutputsLength() else [],
                    "options": options})
    return {"ops": ops, "tensors": tensors}


def tflite_flops(graph):
    """2 x MACs of the conv / matmul ops of a `tflite_graph` (static shapes)."""
    tensors = graph["tensors"]
    macs = 0
    for op in graph["ops"]:
        kind = op["op"]
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"):
            continue
        out = tensors[op["outputs"][0]]["shape"]
        weights = tensors[op["inputs"][1]]["shape"]
        out_elems = int(np.prod(out)) if out else 0
        if kind == "CONV_2D":  # weights (O, KH, KW, I)
            macs += out_elems * weights[1] * weights[2] * weights[3]
        elif kind == "DEPTHWISE_CONV_2D":  # weights (1, KH, KW, O)
            macs += out_elems * weights[1] * weights[2]
        elif kind == "FULLY_CONNECTED":  # weights (O, I)
            macs += out_elems * weights[-1]
        else:
            lhs = tensors[op["inputs"][0]]["shape"]
            inner = lhs[-2] if op["options"].get("adj_x") else lhs[-1]
            macs += out_elems * inner
    return 2 * macs


def op_report(graph):
    """Which ops compute in int8 and which in float, split network / decode.

    An op counts as int8 when an output is int8 (int32 / bool outputs of
    index and comparison ops count as "other"); QUANTIZE / DEQUANTIZE are
    listed apart.

    Returns:
        dict of ``{op: count}``: network_int8, network_float, decode_int8,
        decode_float, decode_other, converts.
    """
    tensors = graph["tensors"]
    report = {key: collections.Counter() for key in
              ("network_int8", "network_float", "decode_int8", "decode_float", "decode_other", "converts")}
    for op in graph["ops"]:
        outs = [tensors[i] for i in op["outputs"]]
        dtypes = {t["dtype"] for t in outs}
        if op["op"] in ("QUANTIZE", "DEQUANTIZE"):
            report["converts"][op["op"]] += 1
            continue
        part = "network" if outs and all(_network_tensor(t["name"]) for t in outs) else "decode"
        if "int8" in dtypes or "uint8" in dtypes:
            kind = "int8"
        elif dtypes & {"float32", "float16"}:
            kind = "float"
        else:
            kind = "other"
        key = f"{part}_{kind}" if f"{part}_{kind}" in report else f"{part}_float"
        report[key][op["op"]] += 1
    return {k: dict(sorted(v.items())) for k, v in report.items()}


def onnx_flops(path):
    """2 x MACs of Conv / MatMul / Gemm in an ONNX file.

    The operand shapes are read from one onnxruntime run on a zero image
    (tf2onnx computes some reshape targets at run time, so static shape
    inference cannot size every MatMul).
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(path)
    graph = model.graph
    shapes = {init.name: list(numpy_helper.to_array(init).shape) for init in graph.initializer}
    counted = [node for node in graph.node if node.op_type in ("Conv", "MatMul", "Gemm")]
    wanted = sorted({name for node in counted for name in (node.input[0], node.input[1], node.output[0])
                     if name not in shapes})
    existing = {o.name for o in graph.output}
    for name in wanted:
        if name not in existing:
            graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {}
    for info in session.get_inputs():
        dtype = np.float32 if "float" in info.type else np.int32
        feeds[info.name] = np.zeros([d if isinstance(d, int) else 1 for d in info.shape], dtype)
    for name, value in zip(wanted, session.run(wanted, feeds)):
        shapes[name] = list(np.shape(value))
    macs = 0
    for node in counted:
        out = shapes[node.output[0]]
        out_elems = int(np.prod(out))
        if node.op_type == "Conv":  # W (O, I / group, KH, KW)
            weight = shapes[node.input[1]]
            macs += out_elems * int(np.prod(weight[1:]))
        elif node.op_type == "MatMul":
            macs += out_elems * shapes[node.input[0]][-1]
        else:
            trans_a = any(a.name == "transA" and a.i for a in node.attribute)
            lhs = shapes[node.input[0]]
            macs += out_elems * (lhs[0] if trans_a else lhs[-1])
    return 2 * macs


def onnx_has_runtime_conv_weights(path):
    """Names of ONNX Conv nodes whose weights are not initializers (TensorRT cannot build them)."""
    import onnx

    graph = onnx.load(path).graph
    constants = {init.name for init in graph.initializer}
    constants |= {node.output[0] for node in graph.node if node.op_type == "Constant"}
    return [node.name for node in graph.node if node.op_type in ("Conv", "ConvTranspose")
            and node.input[1] not in constants]


# ---------------------------------------------------------------------------
# Files

def check_format(fmt, quant):
    """Raises SoloError unless `fmt` is a `FORMATS` key that supports `quant`."""
    if fmt not in FORMATS:
        raise SoloError(f"--format {fmt!r}: not one of {', '.join(FORMATS)}")
    if quant not in FORMATS[fmt]["quants"]:
        raise SoloError(f"--format {fmt} supports --quant {', '.join(FORMATS[fmt]['quants'])}, not {quant!r}"
                        + ("; build fp16/int8 TensorRT engines from the ONNX file with export/build_tensorrt.py"
                           if fmt == "onnx" else ""))


def default_output(model_path, fmt, quant):
    stem = os.path.splitext(os.path.abspath(model_path))[0]
    if fmt == "tflite":
        return f"{stem}_{quant}.tflite"
    return stem + FORMATS[fmt]["suffix"]


def sidecar_path(path):
    """The metadata file written next to an export: ``MODEL.json``."""
    return os.fspath(path).rstrip("/\\") + ".json"


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
        raise SoloError("--quant int8 needs calibration images: pass --calib-data FILE.json (training COCO JSON)")
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
                _write_archive(model, tf.function(fn), saved)
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
        "runtime": FORMATS[fmt]["runtime"],
        "input": {"name": INPUT_NAME, "shape": [1, height, width, 3], "dtype": "float32",
                  "layout": "NHWC, RGB 0..255, letterboxed: top-left, zero padding bottom/right"},
        "input_size": [width, height],
        "class_names": list(model.class_names),
        "mask_thr": float(model.mask_thr),
        "score_thr": float(model.score_thr),
        "update_thr": float(model.update_thr),
        "nms": {"kernel": model.nms_kernel, "sigma": float(model.nms_sigma), "pool": int(model.nms_pool),
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


def format_op_report(report):
    lines = []
    for key in ("network_int8", "network_float", "decode_float", "decode_int8", "converts"):
        ops = report.get(key) or {}
        if ops:
            lines.append(f"  {key}: " + ", ".join(f"{k} x{v}" for k, v in ops.items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command

def export_command(args):
    """`keras-solo export`: see the module docstring."""
    from keras_solo.builders import resolve_path
    from keras_solo.config import ExportConfig, config_from_dict, config_to_dict
    from keras_solo.data.coco import check_image_files, load_coco
    from keras_solo.model.solo import load_model

    run_config = _run_config(args.model)
    defaults = run_config.export if run_config is not None else ExportConfig()
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
    model = load_model(args.model)
    model = resize_model(model, args.imgsz)
    if getattr(args, "set", None):
        from keras_solo.evaluate import apply_eval_overrides

        apply_eval_overrides(model, args.set)

    calibration = calibration_info = None
    if quant == "int8":
        calib_json = args.calib_data
        image_root = getattr(args, "calib_root", None)
        if calib_json is None and image_root is not None:
            raise SoloError("--calib-root needs --calib-data (the JSON whose file names it resolves)")
        if calib_json is None and run_config is not None:
            calib_json = resolve_path(run_config.data.train_json, os.path.dirname(os.path.abspath(args.model)))
            image_root = run_config.data.train_images or None
        if not calib_json:
            raise SoloError("--quant int8 needs --calib-data FILE.json (training images, COCO JSON); "
                            "no config.yaml next to the model names one")
        coco = load_coco(calib_json, image_root, class_names=model.class_names)
        check_image_files(coco)  # a missing or broken image: one line now, not a TF error mid-conversion
        count = min(export_config.calib_images, len(coco.records))
        calibration = lambda: calibration_images(coco, model.input_size, count)  # noqa: E731
        calibration_info = {"data": os.path.abspath(calib_json), "images": count,
                            "pipeline": "keras_solo.data.pipeline.build_dataset(training=False), shuffled, seed 0"}

    meta = export_model(model, out, fmt=fmt, quant=quant, top_k=export_config.top_k, calibration=calibration,
                        calibration_info=calibration_info, export_config=export_config, source=args.model,
                        overwrite=args.overwrite)
    size_mb = meta["size_bytes"] / 2**20
    width, height = meta["input_size"]
    print(f"wrote {os.path.abspath(out)} ({size_mb:.2f} MiB, {fmt} {quant}, input 1x{height}x{width}x3 float32, "
          f"{meta['num_candidates']} candidates -> {meta['max_detections']} detections, "
          f"{meta.get('gflops', float('nan')):.2f} GFLOPs) and {sidecar_path(os.path.abspath(out))}")
    if meta.get("ops"):
        print("ops by precision:\n" + format_op_report(meta["ops"]))
