"""Train keras-solo with your own model.fit script: a packaged preset, COCO
data, your callbacks. Here the synthetic road scenes of `make demo`:

    keras-solo make-synthetic --out data/synthetic
    python examples/fit.py --data data/synthetic --epochs 30 --out runs/fit_example.keras
"""

import argparse
import os

import keras

import keras_solo

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data", default="data/synthetic", help="folder with instances_train.json / instances_val.json")
parser.add_argument("--preset", default="demo", help=f"one of {', '.join(keras_solo.preset_names())}")
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--out", default="runs/fit_example.keras")
args = parser.parse_args()
train_json, val_json = (os.path.join(args.data, f"instances_{split}.json") for split in ("train", "val"))

model = keras_solo.SOLO.from_preset(args.preset, class_names=("person", "rider", "car", "truck", "bus"))
train = keras_solo.coco_dataset(train_json, model=model, training=True)
val = keras_solo.coco_dataset(val_json, model=model)
os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
model.compile()  # the preset's optimizer and learning-rate schedule, sized at fit
model.fit(train, validation_data=val, epochs=args.epochs, verbose=2, callbacks=[
    keras_solo.COCOEvalCallback(val_json, model=model, every=max(1, args.epochs // 3)),
    keras.callbacks.CSVLogger(os.path.splitext(args.out)[0] + "_log.csv"),  # any Keras callback of yours
])
model.save(args.out)
print("segm", keras_solo.coco_metrics(args.out, val_json)["segm"])
