"""Where the time of an exported `.tflite` goes, block by block (TF-free).

LiteRT's Python package (ai-edge-litert 2.3) exposes no per-op profiler, and XNNPACK fuses the
int8 network into a few delegate nodes anyway. So the profile times
*prefixes* of the graph: the flatbuffer's operators are stored in execution
order, and cutting the list after operator n (every tensor that a later
operator or the model output reads becomes an output of the cut model) gives
a model that runs exactly the first n operators. With T(n) the p50 latency
of the first n operators,

    time(ops[a:b]) = T(b) - T(a)

The operators the network's outputs depend on are moved before the
decoding's (still an execution order: decoding only reads the network's
outputs), so that each cut holds whole XNNPACK partitions of the int8
network. Consecutive operators with the same block label (`block_of`) form
one segment; a block's time is the sum of its segments. The cuts are timed in
interleaved rounds (every cut once per round), so a change of machine load
spreads over all cuts instead of landing on one block. By default the
cuts run on 1 thread and are timed in the calling thread's CPU time, which
stays put while other jobs load the machine (2-thread wall times of prefixes
were not even monotone under load). Materialising the
extra outputs can cost a little, so the blocks add up to about, not exactly,
the full model's time; the table says both.

`keras-solo benchmark MODEL.tflite --profile` prints the table.
"""

import collections
import statistics
import time

import numpy as np

GROUPNORM_OPS = frozenset({"MEAN", "SUB", "SQUARED_DIFFERENCE", "RSQRT", "MUL", "ADD", "RESHAPE"})


def block_of(op, name):
    """The block label of one operator, from its type and output tensor name.

    Args:
        op: TFLite builtin name (e.g. "CONV_2D").
        name: the name of its first output tensor (the export graph's name
            scopes: "network/...", "decode/candidates/...", "decode/nms/...").
    """
    if op in ("QUANTIZE", "DEQUANTIZE"):
        return "float/int8 boundaries (QUANTIZE, DEQUANTIZE)"
    if not name.startswith("network"):
        if name.startswith("decode/nms"):
            return "decode: Matrix NMS, maskness, top max_det"
        if "/masks" in name:
            return "decode: candidate masks (gathered kernels, attention rows, resize)"
        if name.startswith("decode"):
            return "decode: candidate selection (sigmoid, point NMS, top-K)"
        return "other"
    if "_backbone" in name:  # the backbone model is named "<name>_backbone"
        return "backbone"
    if "/fpn" in name:
        return "FPN"
    if "head_resize" in name:
        return "resizes (head inputs, mask upsampling)"
    if "grid_attention" in name:
        return "attention (projection, normalisation, resize)"
    if "coords" in name:
        return "mask tower: coordinate channels"
    for tower in ("cate", "mask"):
        label = "category" if tower == "cate" else "mask"
        if f"{tower}_conv" in name:
            if "/norm" in name or (op in GROUPNORM_OPS and "conv_1/" not in name):
                return f"{label} tower: normalisation (GroupNorm ops)"
            return f"{label} tower: conv"
    if "cate_output" in name:
        return "category tower: conv"
    if op.startswith("RESIZE"):
        return "resizes (head inputs, mask upsampling)"
    return "network: other"


def _cut_model(model_obj, n, consumers_after, graph_outputs):
    """Bytes of a copy of `model_obj` that runs only its first n operators."""
    import copy

    import flatbuffers

    cut = copy.copy(model_obj)
    sub = copy.copy(model_obj.subgraphs[0])
    sub.operators = model_obj.subgraphs[0].operators[:n]
    produced = []
    for op in sub.operators:
        produced.extend(int(t) for t in op.outputs if t >= 0)
    outputs = [t for t in produced if t in consumers_after[n] or t in graph_outputs]
    sub.outputs = np.asarray(outputs or produced[-1:], dtype=np.int32)
    cut.subgraphs = [sub] + list(model_obj.subgraphs[1:])
    cut.signatureDefs = []
    builder = flatbuffers.Builder(1024)
    builder.Finish(cut.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def profile_tflite(path, *, threads=1, rounds=3, runs=7, warmup=2, image=None, progress=print):
    """Per-block latency of a `.tflite` by timing graph prefixes.

    Args:
        path: the `.tflite` file (an export of `keras-solo export`).
        threads: LiteRT threads. With 1 (the default) each cut is timed in
            CPU time of the calling thread (XNNPACK runs there), which other
            processes on the machine do not inflate; with more, wall time.
        rounds: interleaved rounds over all cuts.
        runs: timed invocations per cut and round (after `warmup`).
        image: the (1, H, W, 3) float32 input; default a fixed random image.

    Returns:
        dict: ``blocks`` [{block, ms, ops, share}] sorted by time, ``full_ms``
        (p50 of the whole model), ``sum_ms`` (sum of the block times),
        ``segments`` (number of cuts timed), ``threads``, ``rounds``.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    data = open(path, "rb").read()
    model_obj = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    sub = model_obj.subgraphs[0]
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [op_names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM") for c in model_obj.operatorCodes]
    # Network first: every operator the network's tensors depend on, in file
    # order, then the rest (decoding only reads the network's outputs, so this
    # is still an execution order). Without it the int8 network and the float
    # decoding interleave, and XNNPACK's partitions differ from cut to cut.
    names = [t.name.decode() if isinstance(t.name, bytes) else str(t.name) for t in sub.tensors]
    producer = {int(t): i for i, op in enumerate(sub.operators) for t in op.outputs}
    wanted = [i for i, op in enumerate(sub.operators) if names[int(op.outputs[0])].startswith("network")]
    first, stack = set(), list(wanted)
    while stack:
        i = stack.pop()
        if i in first:
            continue
        first.add(i)
        stack.extend(producer[int(t)] for t in sub.operators[i].inputs if int(t) in producer)
    order = sorted(first) + [i for i in range(len(sub.operators)) if i not in first]
    sub.operators = [sub.operators[i] for i in order]
    ops = sub.operators
    labels = [block_of(codes[op.opcodeIndex], names[int(op.outputs[0])]) for op in ops]
    # Cut points: the ends of runs of equal labels.
    cuts = [i for i in range(1, len(ops)) if labels[i] != labels[i - 1]] + [len(ops)]
    consumers_after = {}
    needed = set()
    for i in range(len(ops) - 1, -1, -1):
        consumers_after[i + 1] = set(needed)
        needed.update(int(t) for t in ops[i].inputs if t >= 0)
    graph_outputs = {int(t) for t in sub.outputs}
    interpreters = {}
    for n in cuts:
        content = _cut_model(model_obj, n, consumers_after, graph_outputs)
        interp = Interpreter(model_content=content, num_threads=threads)
        interp.allocate_tensors()
        interpreters[n] = interp
    if image is None:
        shape = interpreters[len(ops)].get_input_details()[0]["shape"]
        image = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    for interp in interpreters.values():
        interp.set_tensor(interp.get_input_details()[0]["index"], image)
        for _ in range(warmup):
            interp.invoke()
    clock = time.thread_time if threads == 1 else time.perf_counter
    samples = collections.defaultdict(list)
    for r in range(rounds):
        for n in cuts:
            interp = interpreters[n]
            for _ in range(runs):
                start = clock()
                interp.invoke()
                samples[n].append(1e3 * (clock() - start))
        if progress:
            progress(f"profile: round {r + 1}/{rounds} ({len(cuts)} cuts)")
    p50 = {n: statistics.median(v) for n, v in samples.items()}
    blocks = collections.defaultdict(lambda: {"ms": 0.0, "ops": 0})
    previous_n, previous_t = 0, 0.0
    for n in cuts:
        label = labels[n - 1]
        blocks[label]["ms"] += p50[n] - previous_t
        blocks[label]["ops"] += n - previous_n
        previous_n, previous_t = n, p50[n]
    total = sum(b["ms"] for b in blocks.values())
    rows = [{"block": k, "ms": round(v["ms"], 2), "ops": v["ops"],
             "share": round(v["ms"] / total, 3) if total else 0.0}
            for k, v in sorted(blocks.items(), key=lambda kv: -kv[1]["ms"])]
    return {"model": str(path), "threads": threads, "clock": "thread CPU time" if threads == 1 else "wall",
            "rounds": rounds, "runs": runs, "segments": len(cuts), "full_ms": round(p50[len(ops)], 2),
            "sum_ms": round(total, 2), "blocks": rows}


def format_profile(result):
    lines = [f"per-block profile of {result['model']} ({result['threads']} thread(s), {result['clock']}, "
             f"{result['segments']} cuts x "
             f"{result['rounds']} rounds x {result['runs']} runs; block = p50 difference of graph prefixes)",
             f"  {'block':70s} {'ms':>7s} {'share':>6s} {'ops':>5s}"]
    for row in result["blocks"]:
        lines.append(f"  {row['block']:70s} {row['ms']:7.2f} {100 * row['share']:5.1f}% {row['ops']:5d}")
    lines.append(f"  {'sum of blocks':70s} {result['sum_ms']:7.2f}")
    lines.append(f"  {'whole model (p50)':70s} {result['full_ms']:7.2f}")
    return "\n".join(lines)
