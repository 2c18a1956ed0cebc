"""Model cost: parameters, GFLOPs, attention cost per level, training
throughput and the peak memory of one training step.

    keras-solo profile --config training/solo_r50_attention.yaml [--flops] [--latency RUNS] [--throughput STEPS]
    keras-solo profile --config training/solo_r50_attention.yaml --pipeline BATCHES
    keras-solo profile --config training/solo_r50_attention.yaml --memory --batch 2 [--full-masks]

FLOPs are counted by TensorFlow's profiler on the frozen forward graph at
batch 1 (2 FLOPs per multiply-add). The memory probe runs one training step
in a fresh process and reports its peak resident set size (ru_maxrss).
"""

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from keras_solo import builders
from keras_solo.errors import write_json


def parameter_table(model):
    """Parameters per component."""
    parts = {
        "backbone": model.backbone.count_params(),
        "fpn": model.fpn.count_params(),
        "heads (shared towers)": model.head.count_params(),
        "mask output kernels": sum(k.count_params() for k in model.mask_kernels),
        "grid attention": sum(a.count_params() for a in model.attentions),
    }
    parts["total"] = model.count_params()
    return parts


def forward_gflops(model):
    """GFLOPs of one forward pass (batch 1) from TF's profiler on the frozen graph."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    width, height = model.input_size
    spec = tf.TensorSpec((1, height, width, 3), tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    graph = frozen.graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    info = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                         options=opts)
    return info.total_float_ops / 1e9


def attention_costs(model, repeats=5):
    """Per level: analytic GFLOPs of the S^2 x S x S map and of the gathered
    rows for K candidates at mask resolution, and measured ms of the layer."""
    import keras
    import tensorflow as tf

    rows = []
    if not model.use_attention:
        return rows
    width, height = model.input_size
    outputs = model(np.zeros((1, height, width, 3), np.float32))
    for level, attention in enumerate(model.attentions):
        s = model.grids[level]
        dim = int(outputs[f"grid_embed_{level}"].shape[-1])
        hm, wm = model.mask_sizes[level]
        k = model.decoder.per_level(model.grids, model.num_classes)[level]
        full_map = 2.0 * s ** 4 * dim / 1e9  # eq. (3) for every (k, i, j)
        gathered = 2.0 * k * hm * wm * dim / 1e9
        embed = outputs[f"grid_embed_{level}"]
        cells = tf.constant(np.arange(k, dtype=np.int32)[None] % (s * s))
        fn = tf.function(lambda e, c, a=attention, size=(hm, wm): a.gather_logits(e, c, out_size=size))
        fn(embed, cells)
        start = time.perf_counter()
        for _ in range(repeats):
            keras.ops.convert_to_numpy(fn(embed, cells))
        ms = (time.perf_counter() - start) / repeats * 1000
        rows.append({"level": model.levels[level], "S": s, "dim": dim, "mask": f"{hm}x{wm}",
                     "full_map_gflops": round(full_map, 4), "candidates": k,
                     "gathered_gflops": round(gathered, 4), "gathered_ms": round(ms, 2)})
    return rows


def train_throughput(config, steps=10, warmup=3):
    """Training images/s of `model.fit` on the config's training data, as `train` runs it.

    One `fit` call runs `warmup + steps` steps; the time is taken between the
    end of step `warmup` and the end of the last step, so tracing and the
    pipeline's start-up are not in it.
    """
    import keras

    from keras_solo.train import build_optimizer

    coco = builders.load_split(config, "train")
    ds, _ = builders.build_input(config, coco, training=True, steps=warmup + steps)
    model = builders.build_model(config)
    builders.freeze_for_training(model, config)
    model.compile(optimizer=build_optimizer(config.train, 100))
    ends = []
    stamp = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter()))
    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[stamp], shuffle=False)
    return steps * config.train.batch_size / (ends[-1] - ends[warmup - 1])


def keras_latency(model, runs=5, warmup=1):
    """Keras inference ms per image (batch 1), split into network and decoding
    (candidates, gathered masks, maskness, Matrix NMS), each in a tf.function."""
    import tensorflow as tf

    width, height = model.input_size
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, height, width, 3)).astype(np.float32))
    network = tf.function(lambda x: model(x, training=False))
    decode = tf.function(model.decode)
    outputs = network(image)
    for _ in range(warmup):
        outputs = network(image)
        decode(outputs)
    net_times, dec_times = [], []
    for _ in range(runs):
        start = time.perf_counter()
        outputs = network(image)
        [v.numpy() for v in outputs.values()]
        mid = time.perf_counter()
        {k: v.numpy() for k, v in decode(outputs).items()}
        end = time.perf_counter()
        net_times.append(mid - start)
        dec_times.append(end - mid)
    return {"network_ms_p50": round(1000 * float(np.median(net_times)), 1),
            "decode_ms_p50": round(1000 * float(np.median(dec_times)), 1), "runs": runs}


def pipeline_throughput(config, batches=10):
    """tf.data training pipeline images/s (decode, letterbox, augmentation, masks)."""
    coco = builders.load_split(config, "train")
    ds = builders.build_dataset(config, coco, training=True, repeat=True)
    iterator = iter(ds)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * config.train.batch_size / (time.perf_counter() - start)


def _memory_probe(config, batch, full_masks):
    """One training step on random inputs with `batch` copies of a synthetic
    target set; returns peak RSS in MiB (run in a fresh process)."""
    import keras

    from keras_solo.train import build_optimizer

    width, height = config.model.input_size
    ms = config.data.mask_stride
    m = config.data.max_instances
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, height, width, 3)).astype(np.float32)
    masks = np.zeros((batch, m, height // ms, width // ms), np.uint8)
    classes = np.full((batch, m), -1, np.int32)
    boxes = np.zeros((batch, m, 4), np.float32)
    # 20 objects per image across all scales (Cityscapes averages ~17).
    for b in range(batch):
        for n in range(min(20, m)):
            size = int(8 * 1.25 ** n) % max(16, min(height, width)) + 8
            x0 = int(rng.uniform(0, width - size))
            y0 = int(rng.uniform(0, height - size))
            masks[b, n, y0 // ms:(y0 + size) // ms, x0 // ms:(x0 + size) // ms] = 1
            classes[b, n] = n % config.model.num_classes
            boxes[b, n] = (x0, y0, x0 + size, y0 + size)
    targets = {"masks": masks, "classes": classes, "boxes": boxes,
               "ignore": np.zeros((batch, height // ms, width // ms), np.uint8),
               "image_info": np.zeros((batch, 4), np.float32)}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = builders.build_model(config)
    model.gather_positive_masks = not full_masks
    model.compile(optimizer=build_optimizer(config.train, 100))
    after_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    model.train_on_batch(images, targets)
    first = time.perf_counter() - start
    start = time.perf_counter()
    loss = model.train_on_batch(images, targets)
    second = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    keras.backend.clear_session()
    return {"batch": batch, "full_masks": full_masks, "peak_rss_mib": round(peak), "rss_before_mib": round(before),
            "rss_after_build_mib": round(after_build), "first_step_s": round(first, 1),
            "step_s": round(second, 1), "loss": float(np.asarray(loss).ravel()[0])}


def profile_command(args):
    from keras_solo.config import load_config

    config = load_config(args.config, args.set)
    if args.memory_child:
        print(json.dumps(_memory_probe(config, args.batch, args.full_masks)))
        return
    report = {"config": args.config}
    if args.memory:
        cmd = [sys.executable, "-m", "keras_solo.cli", "profile", "--config", args.config, "--memory-child",
               "--batch", str(args.batch)] + (["--full-masks"] if args.full_masks else [])
        for item in args.set:
            cmd += ["--set", item]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            report["memory"] = {"error": tail[:300], "full_masks": args.full_masks, "batch": args.batch}
        else:
            report["memory"] = json.loads(proc.stdout.strip().splitlines()[-1])
    elif args.pipeline:
        report["pipeline_images_per_s"] = round(pipeline_throughput(config, args.pipeline), 2)
    else:
        model = builders.build_model(config)
        report["params"] = parameter_table(model)
        if args.latency:
            report["keras_latency"] = keras_latency(model, runs=args.latency)
        if args.flops:
            report["gflops"] = round(forward_gflops(model), 2)
        import keras

        if keras.backend.backend() == "tensorflow":  # tf.function timings
            report["attention"] = attention_costs(model)
        else:
            report["backend"] = keras.backend.backend()
        if args.throughput:
            report["train_images_per_s"] = round(train_throughput(config, steps=args.throughput), 2)
    print(json.dumps(report, indent=1))
    if args.json:
        write_json(args.json, report, what="profile report")
