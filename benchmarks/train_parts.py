"""Where a training step's time goes, below what `keras-solo profile --throughput` shows.

On one fixed batch of a preset (default the edge preset, cityscapes5 train
frames), TensorFlow backend:

    python benchmarks/train_parts.py step    # `fit` s/step and images/s on the fixed batch (16 steps,
                                             # median after 2); --real-input: the tf.data input instead
    python benchmarks/train_parts.py grad    # forward + backward only (a tf.function), s/step of 5
    python benchmarks/train_parts.py ops     # per-op kernel time of forward + backward (TF profiler):
                                             # by op type and by op, summed over threads, per step
    python benchmarks/train_parts.py parts   # input images/s, forward, forward + backward, `fit` img/s

and the input alone:

    python benchmarks/train_parts.py input   # training input images/s vs its parallelism: tf.data
                                             # num_parallel_calls 1 / 2 / AUTOTUNE and the TF-free
                                             # SoloPyDataset with 1 / 2 threads, interleaved rounds
                                             # (default: the paper preset's 1344x672, batch 2)
    python benchmarks/train_parts.py load    # load_example ms per frame (training augmentation)
                                             # under cProfile, and its top functions

Settings of step / grad / ops / parts: --freeze none|C2|C3 (fix the layers
the feature depends on) and --frozen-norm (every backbone BatchNorm in
inference mode), --whole-backbone (grad), --bf16 (mixed_bfloat16),
--depthwise-float32 (with --bf16), --steps-per-execution N, --threads
INTER,INTRA (TensorFlow's op thread pools), --xla (grad: jit_compile).
Environment variables such as TF_SET_ONEDNN_FPMATH_MODE=BF16 apply as set.

Paths: --config (default training/edge.yaml; input: the paper preset),
--set KEY=VALUE (repeatable), --images (the training frames' root; default
the config's data.train_images, and for cityscapes5 data without one, as the
paper preset, $DATA, else ../shared/data/cityscapes5). Relative to the
checkout the code comes from: this one (run from its root), or --tree DIR,
another checkout such as a worktree of an older commit, whose code, presets
and data/ are used (it starts there). Interleaved comparisons are a shell loop:

    for r in 1 2; do for t in ../wt_b369e48 .; do python benchmarks/train_parts.py step --tree $t; done; done
"""

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = "training/solo_r50_attention.yaml"
CITYSCAPES5 = os.environ.get("DATA", "../shared/data/cityscapes5")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=None, help="preset (default training/edge.yaml; input: the paper's)")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    common.add_argument("--images", default=None,
                        help="training image root (default: the config's; cityscapes5 data without one: "
                             "$DATA, else ../shared/data/cityscapes5)")
    common.add_argument("--tree", default=None, metavar="DIR", help="run the code and presets of this checkout")
    common.add_argument("--threads", default=None, metavar="INTER,INTRA", help="TensorFlow op thread pools")
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--freeze", default="none", choices=("none", "C2", "C3"),
                       help="fix the backbone layers this feature depends on")
    model.add_argument("--frozen-norm", action="store_true", help="every backbone BatchNorm in inference mode")
    model.add_argument("--bf16", action="store_true", help="mixed_bfloat16 policy")
    model.add_argument("--depthwise-float32", action="store_true", help="with --bf16: depthwise convs in float32")
    p = sub.add_parser("step", parents=[common, model], help="fit s/step on one fixed batch")
    p.add_argument("--steps", type=int, default=16, help="fit steps (the first 2 are not timed)")
    p.add_argument("--steps-per-execution", type=int, default=1)
    p.add_argument("--real-input", action="store_true", help="the tf.data input instead of the fixed batch")
    p = sub.add_parser("grad", parents=[common, model], help="forward + backward s/step")
    p.add_argument("--whole-backbone", action="store_true", help="the whole backbone not trained")
    p.add_argument("--xla", action="store_true", help="jit_compile the step")
    p.add_argument("--runs", type=int, default=5)
    p = sub.add_parser("ops", parents=[common, model], help="per-op profile of forward + backward")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--top", type=int, default=25, help="rows per table")
    sub.add_parser("parts", parents=[common], help="input, forward, forward + backward, fit")
    p = sub.add_parser("input", parents=[common], help="input images/s vs parallelism")
    p.add_argument("--batches", type=int, default=12, help="timed batches per setting and round")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p = sub.add_parser("load", parents=[common], help="load_example ms/frame under cProfile")
    p.add_argument("--frames", type=int, default=40)
    args = parser.parse_args(argv)
    args.config = args.config or (PAPER if args.command == "input" else "training/edge.yaml")
    return args


def setup_paths(args):
    """Imports come from --tree, else PYTHONPATH when set, else this checkout; relative paths from there."""
    if args.tree:
        tree = os.path.abspath(args.tree)
        os.chdir(tree)
        sys.path.insert(0, tree)
    elif not os.environ.get("PYTHONPATH"):
        sys.path.insert(0, ROOT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def setup_tf(args):
    import tensorflow as tf

    if args.threads:  # before any op
        inter, intra = (int(v) for v in args.threads.split(","))
        tf.config.threading.set_inter_op_parallelism_threads(inter)
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    import keras

    if getattr(args, "bf16", False):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    if getattr(args, "depthwise_float32", False):
        init = keras.layers.DepthwiseConv2D.__init__
        keras.layers.DepthwiseConv2D.__init__ = lambda self, *a, **k: init(self, *a, **{**k, "dtype": "float32"})
    return tf, keras


def load(args):
    """(config, training split) with --set and --images applied."""
    from keras_solo import builders
    from keras_solo.config import load_config

    config = load_config(args.config, list(args.set))
    images = args.images
    if images is None and not config.data.train_images and "cityscapes5" in str(config.data.train_json):
        images = CITYSCAPES5
    if images:
        config = load_config(args.config, list(args.set) + [f"data.train_images={images}"])
    return config, builders.load_split(config, "train")


def fixed_batch(args):
    from keras_solo import builders

    config, coco = load(args)
    dataset = builders.build_dataset(config, coco, training=True, repeat=True)
    x, y = next(iter(dataset))
    return config, dataset, x, y


def build(config, x, args):
    from keras_solo import builders

    model = builders.build_model(config)
    model(x)
    if getattr(args, "whole_backbone", False):
        model.backbone.trainable = False
    elif args.freeze != "none" or args.frozen_norm:
        from keras_solo.model.backbone import freeze_backbone

        freeze_backbone(model.backbone, args.freeze, frozen_norm=args.frozen_norm)
    print(f"freeze {args.freeze}, frozen norm {args.frozen_norm}, bf16 {args.bf16}: "
          f"{len(model.trainable_variables)} trainable variables", flush=True)
    return model


def grad_function(tf, model, xla=False):
    @tf.function(jit_compile=xla)
    def grads(x, y):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = model.compute_loss(x, y, out)
        return tape.gradient(loss, model.trainable_variables)

    def run(x, y):
        return [tf.convert_to_tensor(g).numpy() for g in grads(x, y) if g is not None]
    return run


def timed(fn, runs):
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs


def cmd_step(args):
    tf, keras = setup_tf(args)
    import numpy as np

    from keras_solo.train import build_optimizer

    config, dataset, x, y = fixed_batch(args)
    model = build(config, x, args)
    spe = args.steps_per_execution
    model.compile(optimizer=build_optimizer(config.train, 100), steps_per_execution=spe)
    source = dataset if args.real_input else tf.data.Dataset.from_tensors((x, y)).repeat()
    stamps = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    model.fit(source, epochs=1, steps_per_epoch=args.steps, verbose=0, callbacks=[Stamp()])
    step = float(np.median(np.diff(stamps[2:]) / spe))
    print(f"step ({'tf.data input' if args.real_input else 'fixed batch'}, steps_per_execution {spe}): "
          f"{step:.3f} s/step median, {config.train.batch_size / step:.2f} images/s", flush=True)


def cmd_grad(args):
    tf, _ = setup_tf(args)
    config, _, x, y = fixed_batch(args)
    model = build(config, x, args)
    grads = grad_function(tf, model, xla=args.xla)
    grads(x, y)
    print(f"forward + backward{' (XLA)' if args.xla else ''}: {timed(lambda: grads(x, y), args.runs):.3f} s/step",
          flush=True)


def cmd_ops(args):
    tf, _ = setup_tf(args)
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    config, _, x, y = fixed_batch(args)
    model = build(config, x, args)
    grads = grad_function(tf, model)
    grads(x, y)
    grads(x, y)
    logdir = tempfile.mkdtemp(prefix="train_parts_ops_")
    tf.profiler.experimental.start(logdir)
    wall = timed(lambda: grads(x, y), args.runs)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
        space.ParseFromString(f.read())
    by_type, by_name = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name and not name.startswith(("__inference", "EagerLocalExecute")):
                    ms = event.duration_ps / 1e9 / args.runs
                    by_type[name.rsplit(":", 1)[1]] += ms
                    by_name[name] += ms
    print(f"kernel ms per step (summed over threads) {sum(by_type.values()):.0f}")
    conv = sum(v for k, v in by_type.items() if "Conv2D" in k and "Depthwise" not in k)
    print(f"of which regular convolutions (forward, both gradients) {conv:.0f}")
    print(f"wall ms per step {1000 * wall:.0f}")
    for key, value in by_type.most_common(args.top):
        print(f"{value:8.1f} ms  {key}")
    print()
    for key, value in by_name.most_common(args.top + 5):
        print(f"{value:8.1f} ms  {key}")
    print(f"(trace: {logdir})")


def cmd_parts(args):
    args.freeze, args.frozen_norm, args.bf16 = "none", False, False
    tf, _ = setup_tf(args)
    from keras_solo.train import build_optimizer

    config, dataset, x, y = fixed_batch(args)
    batch = config.train.batch_size
    iterator = iter(dataset)
    next(iterator)
    print(f"input: {batch / timed(lambda: next(iterator), 10):.2f} images/s", flush=True)
    model = build(config, x, args)
    model.compile(optimizer=build_optimizer(config.train, 100))
    forward = tf.function(lambda images: model(images, training=True))
    forward(x)
    print(f"forward: {timed(lambda: [v.numpy() for v in forward(x).values()], 5):.3f} s/step", flush=True)
    grads = grad_function(tf, model)
    grads(x, y)
    print(f"forward + backward: {timed(lambda: grads(x, y), 5):.3f} s/step", flush=True)
    fixed = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(fixed, epochs=1, steps_per_epoch=3, verbose=0)
    start = time.perf_counter()
    model.fit(fixed, epochs=1, steps_per_epoch=8, verbose=0)
    print(f"fit, fixed batch: {8 * batch / (time.perf_counter() - start):.2f} images/s", flush=True)


def cmd_input(args):
    tf, _ = setup_tf(args)
    from keras_solo import builders
    from keras_solo.data.loader import SoloPyDataset
    from keras_solo.data.pipeline import build_dataset

    args.set = [f"train.batch_size={args.batch_size}"] + list(args.set)
    config, coco = load(args)
    options = builders.example_options(config)
    size = config.train.batch_size

    def tf_data(calls):
        return iter(build_dataset(coco, options, batch_size=size, training=True, repeat=True,
                                  num_parallel_calls=calls))

    def py_dataset(threads):
        loader = SoloPyDataset(coco, options, batch_size=size, training=True, workers=threads,
                               use_multiprocessing=False)
        loader.on_epoch_begin()
        if threads > 1:  # PyDataset's own enqueuer, as model.fit drives it (a Keras internal)
            from keras.src.trainers.data_adapters.py_dataset_adapter import OrderedEnqueuer

            enqueuer = OrderedEnqueuer(loader, workers=threads, use_multiprocessing=False)
            enqueuer.start()
            return enqueuer.get()

        def batches():
            index = 0
            while True:
                yield loader[index % len(loader)]
                index += 1
        return batches()

    settings = {"tf.data 1": lambda: tf_data(1), "tf.data 2": lambda: tf_data(2),
                "tf.data AUTOTUNE": lambda: tf_data(tf.data.AUTOTUNE),
                "PyDataset 1 thread": lambda: py_dataset(1), "PyDataset 2 threads": lambda: py_dataset(2)}
    print(f"{args.config}, input {tuple(config.model.input_size)}, batch {size}, {args.batches} batches "
          f"after 3 warm-up, a fresh iterator per setting and round", flush=True)
    for round_ in range(1, args.rounds + 1):
        row = []
        for name, make in settings.items():
            iterator = make()  # fresh: a live one would fill its buffers while another is timed
            for _ in range(3):
                next(iterator)
            row.append(f"{name} {size / timed(lambda: next(iterator), args.batches):.1f}")
            del iterator
        print(f"round {round_} images/s: " + ", ".join(row), flush=True)


def cmd_load(args):
    import cProfile
    import pstats

    from keras_solo import builders
    from keras_solo.data.pipeline import load_example

    config, coco = load(args)
    options = builders.example_options(config)
    load_example(coco, 0, options, training=True)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    for index in range(args.frames):
        load_example(coco, index % len(coco.records), options, training=True)
    profile.disable()
    print(f"load_example {args.config}: {1000 * (time.perf_counter() - start) / args.frames:.1f} ms/img "
          f"({args.frames} frames)")
    pstats.Stats(profile).sort_stats("tottime").print_stats(14)


def main(argv=None):
    args = parse_args(argv)
    setup_paths(args)
    {"step": cmd_step, "grad": cmd_grad, "ops": cmd_ops, "parts": cmd_parts, "input": cmd_input,
     "load": cmd_load}[args.command](args)


if __name__ == "__main__":
    main()
