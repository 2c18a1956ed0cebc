"""Evaluation bookkeeping: results keep the dataset's exact image ids; every
format goes through the one dataset loop."""

import json

import numpy as np
from helpers import tiny_config, write_tiny_coco

from keras_solo import builders
from keras_solo.data.coco import load_coco
from keras_solo.engine import KerasEngine
from keras_solo.evaluate import evaluate_model
from keras_solo.runtime.bench import inference_on_dataset

# float32 (the training pipeline's image_info) holds integers exactly only below 2^24
LARGE_IDS = [2**24 + 1, 2**31 - 3, 7]


def test_large_image_ids_reach_the_results_exactly(tmp_path):
    tiny = write_tiny_coco(tmp_path)
    data = json.loads(open(tiny.json_path).read())
    new_id = dict(zip([image["id"] for image in data["images"]], LARGE_IDS))
    for image in data["images"]:
        image["id"] = new_id[image["id"]]
    for ann in data["annotations"]:
        ann["image_id"] = new_id[ann["image_id"]]
    with open(tiny.json_path, "w") as f:
        json.dump(data, f)
    assert float(np.float32(2**24 + 1)) != 2**24 + 1  # the rounding this guards against

    coco = load_coco(tiny.json_path)
    model = builders.build_model(tiny_config(None, f"model.num_classes={len(coco.class_names)}",
                                             f"model.class_names=[{','.join(coco.class_names)}]"))
    seen = []
    timing = inference_on_dataset(KerasEngine(model), [(r.image_id, r.path) for r in coco.records],
                                  lambda image_id, found: seen.append(image_id), progress=False)
    assert seen == [record.image_id for record in coco.records]
    assert sorted(seen) == sorted(LARGE_IDS) and timing["images"] == 3
    metrics, results = evaluate_model(model, coco, progress=False)
    assert {r["image_id"] for r in results} <= set(LARGE_IDS) and metrics["num_images"] == 3
    assert set(metrics["ms_per_image"]) == {"preprocess", "network", "decode"}
