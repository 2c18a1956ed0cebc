"""benchmarks/ap_breakdown.py: the COCO error analysis removes each kind of error in turn."""

import json

import numpy as np
from helpers import load_benchmark
from pycocotools import mask as mask_utils


def rle(box, size=(120, 200)):
    mask = np.zeros(size, np.uint8, order="F")
    x, y, w, h = box
    mask[y:y + h, x:x + w] = 1
    encoded = mask_utils.encode(mask)
    encoded["counts"] = encoded["counts"].decode()
    return encoded


def test_each_row_removes_one_kind_of_error(tmp_path):
    """One object per class (car, bus, person), each found exactly; for the car, four false positives
    ranked above it, one of each kind: a loose mask on it (IoU 0.45), a car on the bus (similar class),
    a car on the person (other class), a small box on empty road. With one object a class's AP is
    1 / (the rank of its first true positive): each row moves the car's up by one."""
    names = ["person", "rider", "car", "truck", "bus"]
    car, bus, person = [10, 10, 60, 40], [100, 20, 90, 60], [10, 60, 40, 50]
    gt = {"images": [{"id": 1, "width": 200, "height": 120, "file_name": "a.jpg"}],
          "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": c, "bbox": b, "area": b[2] * b[3],
                           "iscrowd": 0, "segmentation": rle(b)}
                          for i, (c, b) in enumerate([(3, car), (5, bus), (1, person)])]}
    dets = [(3, [150, 95, 30, 20], 0.99), (3, person, 0.97), (3, bus, 0.95), (3, [10, 10, 36, 30], 0.9),
            (3, car, 0.5), (5, bus, 0.6), (1, person, 0.6)]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps([{"image_id": 1, "category_id": c, "bbox": b, "score": s,
                                                   "segmentation": rle(b)} for c, b, s in dets]))
    result = load_benchmark("ap_breakdown").main(["--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"),
                                    "--json", str(tmp_path / "out.json")])
    mean = lambda rank: round((100 / rank + 200) / 3, 2)  # noqa: E731 - car, bus (100), person (100)
    assert result["analysis"]["all"] == {"C75": mean(5), "C50": mean(5), "Loc": mean(4), "Sim": mean(3),
                                         "Oth": mean(2), "BG": 100.0}
    # the road box is small (600 pixels): ignored with the small objects
    assert result["analysis"]["not small"] == {"C75": mean(4), "C50": mean(4), "Loc": mean(3), "Sim": mean(2),
                                               "Oth": 100.0, "BG": 100.0}
    assert result["objects"] == {"small": 0, "medium": 3, "large": 0}
    assert result["recall_iou50"] == {"small": None, "medium": 100.0, "large": None}
    assert json.loads((tmp_path / "out.json").read_text())["analysis"] == result["analysis"]
