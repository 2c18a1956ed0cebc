"""Input pipeline images/s, forward, forward+backward and fit s/step of the edge preset on one batch: python docs/measure/step_parts.py"""
import os, sys, time
import numpy as np
import tensorflow as tf
import keras
from keras_solo import builders
from keras_solo.config import load_config
from keras_solo.train import build_optimizer

cfg = load_config("training/edge.yaml", overrides=sys.argv[1:])
coco = builders.load_split(cfg, "train")
ds = builders.build_dataset(cfg, coco, training=True, repeat=True)
it = iter(ds)
next(it)
t = time.perf_counter(); n = 10
for _ in range(n): b = next(it)
print("pipeline img/s", n * cfg.train.batch_size / (time.perf_counter() - t), flush=True)
x, y = b
model = builders.build_model(cfg)
model.compile(optimizer=build_optimizer(cfg.train, 100))
model(x)
fwd = tf.function(lambda x: model(x, training=True))
fwd(x)
t = time.perf_counter()
for _ in range(5): [v.numpy() for v in fwd(x).values()]
print("fwd s/step", (time.perf_counter() - t) / 5, flush=True)
@tf.function
def grads(x, y):
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = model.compute_loss(x, y, out)
    return tape.gradient(loss, model.trainable_variables)
grads(x, y)
t = time.perf_counter()
for _ in range(5): [tf.convert_to_tensor(g).numpy() for g in grads(x, y) if g is not None]
print("fwd+bwd s/step", (time.perf_counter() - t) / 5, flush=True)
fixed = tf.data.Dataset.from_tensors((x, y)).repeat()
model.fit(fixed, epochs=1, steps_per_epoch=3, verbose=0)
t = time.perf_counter()
model.fit(fixed, epochs=1, steps_per_epoch=8, verbose=0)
print("fit fixed batch img/s", 8 * cfg.train.batch_size / (time.perf_counter() - t), flush=True)
