"""Forward+backward time of the edge preset per frozen part: python docs/measure/grad_step_freeze.py none|all|upto03|upto05|bn|upto03bn|upto05bn; XLA=1 compiles it."""
import os, sys, time
import numpy as np
import tensorflow as tf
import keras
from keras_solo import builders
from keras_solo.config import load_config
from keras_solo.train import build_optimizer

cfg = load_config("training/edge.yaml")
coco = builders.load_split(cfg, "train")
ds = builders.build_dataset(cfg, coco, training=True, repeat=True)
x, y = next(iter(ds))
mode = sys.argv[1]
model = builders.build_model(cfg)
model(x)
# upto03 = stem + blocks 0-2 = every layer C2 depends on; upto05 = C3 (the same layer sets as name matching)
from keras_solo.model.backbone import freeze_backbone
if mode == "all":
    model.backbone.trainable = False
elif mode != "none":
    freeze_backbone(model.backbone, {"03": "C2", "05": "C3"}.get(mode[4:6], "none"), frozen_norm="bn" in mode)
print(mode, "trainable vars", len(model.trainable_variables))
@tf.function(jit_compile=os.environ.get("XLA") == "1")
def grads(x, y):
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = model.compute_loss(x, y, out)
    return tape.gradient(loss, model.trainable_variables)
grads(x, y)
t = time.perf_counter()
for _ in range(5): [tf.convert_to_tensor(g).numpy() for g in grads(x, y) if g is not None]
print(mode, "fwd+bwd s/step", (time.perf_counter() - t) / 5, flush=True)
