"""Export a trained model to int8 TFLite and predict with the export in the
TensorFlow-free runtime (what a device installs: keras-solo[runtime]); for
detections of a folder with any model file see examples/predict_folder.py:

    python examples/predict_export.py --model runs/fit_example.keras --data data/synthetic
"""

import argparse
import glob
import os

import keras_solo

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="runs/fit_example.keras")
parser.add_argument("--data", default="data/synthetic", help="folder with instances_train.json and val/")
parser.add_argument("--out", default="runs/fit_example_int8.tflite")
args = parser.parse_args()
frames = sorted(glob.glob(os.path.join(args.data, "val", "*.png")))[:3]

meta = keras_solo.export_model(args.model, args.out, quant="int8", overwrite=True,
                               calibration=os.path.join(args.data, "instances_train.json"), calibration_images=32)
print(f"wrote {args.out}: {meta['size_bytes'] / 2**20:.2f} MiB")

from keras_solo.runtime.engine import open_engine  # noqa: E402 (numpy + cv2 + LiteRT only)
from keras_solo.runtime.image import read_image  # noqa: E402

engine = open_engine(args.out)
for frame in frames:
    found, timing = engine(read_image(frame), min_score=0.3)
    print(os.path.basename(frame), f"{len(found['scores'])} instances in {1000 * timing['total']:.1f} ms (int8)")
