"""Detect the instances of every image in a folder and write them as one JSON
(a list of {"source", "instances"}, as `keras-solo predict` writes
detections.json), with a .keras model or an export (.tflite, .onnx):

    python examples/predict_folder.py --model runs/fit_example.keras --images data/synthetic/val
"""

import argparse
import glob
import json
import os

import keras_solo

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="runs/fit_example.keras", help=".keras, .tflite or .onnx")
parser.add_argument("--images", default="data/synthetic/val")
parser.add_argument("--score", type=float, default=0.3)
parser.add_argument("--out", default="runs/predict_folder.json")
args = parser.parse_args()
images = sorted(p for p in glob.glob(os.path.join(args.images, "*"))
                if p.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".webp")))

records = []
for path in images:  # detect keeps the model loaded between calls
    found = keras_solo.detect(args.model, path, score=args.score, masks=False)  # masks=True adds bool arrays
    records.append({"source": path, "instances": found})  # class, score, bbox_xywh, segmentation (RLE)
    print(os.path.basename(path), [(d["class"], d["score"]) for d in found])
os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
with open(args.out, "w") as f:
    json.dump(records, f)
print(f"wrote {args.out}: {sum(len(r['instances']) for r in records)} instances in {len(records)} images")
