"""Training step time on one fixed batch of the edge preset (no input pipeline): python docs/measure/train_step_settings.py none|frozen; env BF16=1 (mixed_bfloat16), STOP=3|5 (fixed up to C2|C3), SPE=n (steps_per_execution), PIPE=1 (real pipeline)."""
import os, sys, time
import numpy as np
import tensorflow as tf
import keras
if os.environ.get("BF16") == "1":
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
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
if mode == "frozen":  # STOP=3: stem + blocks 0-2 (C2), STOP=5: up to C3; BatchNorm frozen
    from keras_solo.model.backbone import freeze_backbone
    freeze_backbone(model.backbone, {"3": "C2", "5": "C3"}[os.environ.get("STOP", "3")], frozen_norm=True)
print(mode, "trainable vars", len(model.trainable_variables))
model.compile(optimizer=build_optimizer(cfg.train, 100), steps_per_execution=int(os.environ.get("SPE", "1")))
fixed = tf.data.Dataset.from_tensors((x, y)).repeat()
src = ds if os.environ.get("PIPE") == "1" else fixed
class T(keras.callbacks.Callback):
    def on_train_batch_end(self, b, logs=None): ts.append(time.perf_counter())
ts = []
model.fit(src, epochs=1, steps_per_epoch=16, verbose=0, callbacks=[T()])
spe = int(os.environ.get("SPE", "1"))
d = np.diff(ts[2:]) / spe
print(mode, os.environ.get("BF16"), "s/step median", np.median(d), "img/s", cfg.train.batch_size / np.median(d), flush=True)
