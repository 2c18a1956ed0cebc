"""Fine-tune a preset on your COCO JSON and classes (other classes' annotations
are dropped; `edge` starts from ImageNet weights: keras-solo[pretrained]):

    python examples/finetune.py --train train.json --val val.json --images images/ \\
        --classes car,truck,bus --epochs 24 --out runs/finetune/model.keras
"""

import argparse

import keras

import keras_solo

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--train", required=True, help="COCO instances JSON")
parser.add_argument("--val", required=True)
parser.add_argument("--images", help="folder of the JSONs' file_names (default: each JSON's folder)")
parser.add_argument("--classes", required=True, help="comma-separated names from the JSON's categories")
parser.add_argument("--preset", default="edge", help=f"one of {', '.join(keras_solo.preset_names())}")
parser.add_argument("--set", nargs="*", default=[], help="preset overrides, e.g. model.input_size=[320,160]")
parser.add_argument("--epochs", type=int, default=24)
parser.add_argument("--out", default="runs/finetune/model.keras")
args = parser.parse_args()


class StopBelowLoss(keras.callbacks.Callback):  # yours: any keras.callbacks.Callback
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = logs["loss"] < 0.2


model = keras_solo.SOLO.from_preset(args.preset, class_names=args.classes.split(","), overrides=args.set)
train = keras_solo.coco_dataset(args.train, args.images, model=model, training=True)
val = keras_solo.coco_dataset(args.val, args.images, model=model)
model.compile()  # the preset's schedule; or model.compile(optimizer=keras.optimizers.AdamW(1e-4))
model.fit(train, validation_data=val, epochs=args.epochs, verbose=2, callbacks=[
    keras_solo.COCOEvalCallback(args.val, args.images, model=model),  # val_AP in the logs
    keras_solo.ResumableBackup(args.out.removesuffix(".keras") + "_backup"),  # re-run resumes a killed run
    StopBelowLoss()])
model.save(args.out)  # keras_solo.load_model(args.out) reads it back
