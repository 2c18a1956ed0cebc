"""Reading written files back: ops, tensors, GFLOPs and the int8 / float op split.

GFLOPs are 2 x multiply-accumulates of the convolution / matmul ops of the
exported graph (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, BATCH_MATMUL in
TFLite; Conv, MatMul, Gemm in ONNX), counted from the static shapes of the
file itself. Element-wise ops, resizes and reductions are not counted.
"""

import collections

import numpy as np

from keras_solo.errors import SoloError
from keras_solo.export.graph import network_tensor


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
        part = "network" if outs and all(network_tensor(t["name"]) for t in outs) else "decode"
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


def format_op_report(report):
    lines = []
    for key in ("network_int8", "network_float", "decode_float", "decode_int8", "converts"):
        ops = report.get(key) or {}
        if ops:
            lines.append(f"  {key}: " + ", ".join(f"{k} x{v}" for k, v in ops.items()))
    return "\n".join(lines)
