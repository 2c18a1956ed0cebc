"""TFLite, ONNX and SavedModel files from the export graph (`graph.serving_function`).

Decisions (measured on TF 2.21 / Keras 3.15 / ai-edge-litert 2.3):

- Freezing: the graph is written with `keras.export.ExportArchive` (which
  tracks every model variable) to a SavedModel and converted with
  `TFLiteConverter.from_saved_model`, keeping the named signature
  (images -> labels, masks, scores, valid). ONNX goes through
  `tf2onnx.convert.from_function` (it freezes the function itself), opset 17,
  checked with `onnx.checker.check_model(full_check=True)`.
- int8 is mixed: the network full integer, the decoding float (see
  `calibration`).
- fp16 stores weights in float16 (DEQUANTIZE to float32 at load; XNNPACK runs
  in fp32 on CPUs without native fp16). int8-dynamic stores int8 weights and
  quantises activations on the fly: its convolutions are hybrid (int8
  weights, float32 in and out, so `readback.op_report` lists them as float),
  and the gathered 1x1 mask kernel columns are gathered from the int8 weight
  table (GATHER on int8, then DEQUANTIZE).
- ONNX and SavedModel are fp32 only; an fp16 / int8 TensorRT engine is built
  from the ONNX file by `export/build_tensorrt.py`.
"""

import numpy as np

from keras_solo.errors import SoloError
from keras_solo.export.calibration import strip_calibration_outside_network
from keras_solo.export.graph import input_signature
from keras_solo.runtime.formats import FORMATS

ONNX_OPSET = 17


def write_archive(model, fn, path):
    """Writes ``fn`` (the traced export graph) and every variable of ``model`` as a SavedModel."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", fn, input_signature=input_signature(model))
    archive.write_out(path, verbose=False)


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
        raise SoloError(f"quant {quant!r}: not one of {', '.join(FORMATS['tflite']['quants'])}")
    if calibration is None:
        raise SoloError("int8 needs calibration images (--calib-data; calibration= in Python)")
    from tensorflow.lite.python import convert as tflite_convert

    converter.representative_dataset = lambda: ([image] for image in calibration())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter._experimental_calibrate_only = True  # noqa: SLF001 (the documented selective-quantisation path)
    calibrated = converter.convert()
    calibrated, denylist = strip_calibration_outside_network(calibrated)
    return tflite_convert.mlir_quantize(
        calibrated, fully_quantize=False, input_data_type=tf.float32, output_data_type=tf.float32,
        denylisted_ops=["TOPK_V2"], denylisted_nodes=denylist)


def check_tflite_loads(model_bytes, quant):
    """Loads a converted flatbuffer in LiteRT (with XNNPACK, as the runtime does).

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
