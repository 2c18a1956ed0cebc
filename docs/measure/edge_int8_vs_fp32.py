"""int8 vs fp32 TFLite of the trained edge model on the cityscapes5 val frames.

Per class mask AP of each format (the same evaluation path as `keras-solo
benchmark --data`), then on the first 12 frames the mean score of the valid
detections and the mean mask area (pixels > 0.5) of the 10 best.

    python docs/measure/edge_int8_vs_fp32.py [PREFIX]   (default runs/export/edge_cs5_e12)
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from keras_solo.data.coco import load_coco  # noqa: E402
from keras_solo.evaluate import evaluate_engine  # noqa: E402
from keras_solo.runtime.engine import open_engine  # noqa: E402
from keras_solo.runtime.image import read_image  # noqa: E402

VAL, IMAGES = "data/cityscapes5/instances_val.json", "../shared/data/cityscapes5"


def main():
    prefix = sys.argv[1] if len(sys.argv) > 1 else "runs/export/edge_cs5_e12"
    val = json.load(open(VAL))
    for quant in ("int8", "fp32"):
        path = f"{prefix}_{quant}.tflite"
        engine = open_engine(path, threads=2)
        metrics, _ = evaluate_engine(engine, load_coco(VAL, IMAGES, class_names=engine.class_names), progress=False)
        scores, areas = [], []
        for image in val["images"][:12]:
            batch, _ = engine.preprocess(read_image(os.path.join(IMAGES, image["file_name"])))
            out = engine.network(batch)
            score, valid, masks = (np.asarray(out[k])[0] for k in ("scores", "valid", "masks"))
            scores += list(score[valid.astype(bool)])
            areas += [float((masks[i] > 0.5).sum()) for i in np.argsort(-score)[:10]]
        print(f"{quant}: segm AP {metrics['segm']['AP']:.2f}, per class {metrics.get('per_class')}, "
              f"{metrics['num_detections']} detections; first 12 frames: mean score {np.mean(scores):.3f}, "
              f"top-10 mask area {np.mean(areas):.0f} px")


if __name__ == "__main__":
    main()
