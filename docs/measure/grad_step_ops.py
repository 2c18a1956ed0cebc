"""Per-op time of one forward+backward step (TF profiler, xplane parsed here): python docs/measure/grad_step_ops.py [frozen|none] (default frozen: C2 fixed, BatchNorm frozen; none: nothing fixed); env BF16=1 (mixed_bfloat16), DWF32=1 (with BF16: the depthwise convs in float32)."""
import os, sys, time, glob, collections
import numpy as np
import tensorflow as tf
import keras
if os.environ.get("BF16") == "1":
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
if os.environ.get("DWF32") == "1":
    _init = keras.layers.DepthwiseConv2D.__init__
    keras.layers.DepthwiseConv2D.__init__ = lambda self, *a, **k: _init(self, *a, **{**k, "dtype": "float32"})
from keras_solo import builders
from keras_solo.config import load_config
from tensorflow.tsl.profiler.protobuf import xplane_pb2

cfg = load_config("training/edge.yaml")
coco = builders.load_split(cfg, "train")
ds = builders.build_dataset(cfg, coco, training=True, repeat=True)
x, y = next(iter(ds))
model = builders.build_model(cfg)
model(x)
from keras_solo.model.backbone import freeze_backbone
if (sys.argv[1] if len(sys.argv) > 1 else "frozen") == "frozen":
    freeze_backbone(model.backbone, "C2", frozen_norm=True)  # stem + blocks 0-2 fixed, BatchNorm frozen
@tf.function
def grads(x, y):
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = model.compute_loss(x, y, out)
    return tape.gradient(loss, model.trainable_variables)
grads(x, y); grads(x, y)
logdir = "/tmp/opprof"
os.system(f"rm -rf {logdir}")
tf.profiler.experimental.start(logdir)
t0 = time.perf_counter()
for _ in range(3): [tf.convert_to_tensor(g).numpy() for g in grads(x, y) if g is not None]
wall = time.perf_counter() - t0
tf.profiler.experimental.stop()
f = glob.glob(logdir + "/**/*.xplane.pb", recursive=True)[0]
xs = xplane_pb2.XSpace(); xs.ParseFromString(open(f, "rb").read())
bytype = collections.Counter(); byname = collections.Counter()
for plane in xs.planes:
    md = plane.event_metadata
    for line in plane.lines:
        for ev in line.events:
            name = md[ev.metadata_id].name
            if ":" in name and "::" not in name and not name.startswith(("__inference", "EagerLocalExecute")):
                op, typ = name.rsplit(":", 1)
                bytype[typ] += ev.duration_ps / 1e9 / 3
                byname[name] += ev.duration_ps / 1e9 / 3
tot = sum(bytype.values())
print("kernel ms per step (summed over threads)", round(tot))
conv = sum(v for k, v in bytype.items() if "Conv2D" in k and "Depthwise" not in k)
print("of which regular convolutions (forward, both gradients)", round(conv))
print("wall ms per step", round(wall / 3 * 1000))
for k, v in bytype.most_common(25): print(f"{v:8.1f} ms  {k}")
print()
for k, v in byname.most_common(30): print(f"{v:8.1f} ms  {k}")
