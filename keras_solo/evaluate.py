"""COCO evaluation around pycocotools (never a re-implementation of AP).

`COCOEvaluator` follows detectron2's protocol (reset / process / evaluate):
detections are RLE-encoded in COCO results format, then `COCOeval` computes
segm AP, AP50, AP75, APs, APm, APl, box AP from the masks' boxes, and a
per-class AP table from the precision array.

Every format is evaluated through the runtime's one dataset loop
(`keras_solo.runtime.bench.inference_on_dataset`): a `.keras` model as a
`keras_solo.engine.KerasEngine`, an export through its `.tflite` / `.onnx`
engine.
"""

import contextlib
import io
import json

from keras_solo.engine import KerasEngine
from keras_solo.errors import SoloError
from keras_solo.runtime.bench import inference_on_dataset
from keras_solo.runtime.detections import coco_results

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class COCOEvaluator:
    """Accumulates detections and evaluates them against a COCO JSON.

    Args:
        coco_dataset: a `CocoDataset` (keras_solo.data.coco) for the ground truth.
        image_ids: restrict evaluation to these images (default: all).
    """

    def __init__(self, coco_dataset, image_ids=None):
        self.dataset = coco_dataset
        self.image_ids = list(image_ids) if image_ids is not None else [r.image_id for r in coco_dataset.records]
        self.reset()

    def reset(self):
        self.results = []
        self.seen = set()

    def process(self, image_id, detections):
        """Adds one image's detections (dict from `detections.to_original`)."""
        self.seen.add(int(image_id))
        self.results.extend(coco_results(image_id, detections, self.dataset.cat_ids))

    def _ground_truth(self):
        from pycocotools.coco import COCO

        with open(self.dataset.json_path, encoding="utf-8") as f:
            data = json.load(f)
        keep_cats = set(self.dataset.cat_ids)
        data["categories"] = [c for c in data["categories"] if c["id"] in keep_cats]
        data["annotations"] = [a for a in data["annotations"] if a.get("category_id") in keep_cats]
        data.setdefault("info", {})
        data.setdefault("licenses", [])
        gt = COCO()
        with contextlib.redirect_stdout(io.StringIO()):
            gt.dataset = data
            gt.createIndex()
        return gt

    def evaluate(self):
        """Runs COCOeval for segm and bbox.

        Returns:
            dict: segm {AP, AP50, ...} in percent, bbox {...}, per_class
            {name: segm AP}, num_images, num_detections.
        """
        from pycocotools.cocoeval import COCOeval

        gt = self._ground_truth()
        image_ids = [i for i in self.image_ids if i in self.seen] or self.image_ids
        metrics = {"num_images": len(image_ids), "num_detections": len(self.results)}
        for iou_type in ("segm", "bbox"):
            if not self.results:
                metrics[iou_type] = {name: 0.0 for name in METRIC_NAMES}
                continue
            with contextlib.redirect_stdout(io.StringIO()):
                dt = gt.loadRes([dict(r) for r in self.results])
                ev = COCOeval(gt, dt, iou_type)
                ev.params.imgIds = image_ids
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            metrics[iou_type] = {name: _pct(ev.stats[i]) for i, name in enumerate(METRIC_NAMES)}
            if iou_type == "segm":
                metrics["per_class"] = _per_class_ap(ev, self.dataset)
        metrics.setdefault("per_class", {name: 0.0 for name in self.dataset.class_names})
        return metrics


def _pct(value):
    return round(float(value) * 100.0, 2) if value >= 0 else float("nan")


def _per_class_ap(coco_eval, dataset):
    """Per-class AP (IoU 0.5:0.95, all areas, 100 dets) from the precision array."""
    precision = coco_eval.eval["precision"]  # (T, R, K, A, M)
    cat_ids = list(coco_eval.params.catIds)
    table = {}
    for label, cat_id in enumerate(dataset.cat_ids):
        if cat_id not in cat_ids:
            continue
        p = precision[:, :, cat_ids.index(cat_id), 0, -1]
        p = p[p > -1]
        table[dataset.class_names[label]] = _pct(p.mean()) if p.size else float("nan")
    return table


def format_metrics(metrics, title="segm"):
    """Markdown table of the AP metrics and per-class AP."""
    lines = [f"| {title} | " + " | ".join(METRIC_NAMES) + " |", "|---" * (len(METRIC_NAMES) + 1) + "|"]
    for kind in ("segm", "bbox"):
        row = metrics.get(kind, {})
        lines.append(f"| {kind} | " + " | ".join(f"{row.get(n, float('nan')):.1f}" for n in METRIC_NAMES) + " |")
    per_class = metrics.get("per_class", {})
    if per_class:
        lines += ["", "| class | segm AP |", "|---|---|"]
        lines += [f"| {name} | {ap:.1f} |" for name, ap in per_class.items()]
    return "\n".join(lines)


def evaluate_engine(engine, coco_dataset, *, limit=0, progress=True):
    """COCO metrics of an engine (any format) on a dataset; returns (metrics, results).

    Raises:
        SoloError: the dataset's classes differ from the model's, or a bad
            image file (one line naming it).
    """
    if engine.class_names and tuple(engine.class_names) != tuple(coco_dataset.class_names):
        raise SoloError(f"{coco_dataset.json_path}: classes {list(coco_dataset.class_names)} differ from the "
                        f"model's {list(engine.class_names)}")
    from keras_solo.data.coco import check_image_files

    check_image_files(coco_dataset)  # every image readable before the first one is run
    evaluator = COCOEvaluator(coco_dataset)
    records = coco_dataset.records[:limit] if limit else coco_dataset.records
    seconds = inference_on_dataset(engine, [(r.image_id, r.path) for r in records], evaluator.process,
                                   progress=progress)
    metrics = evaluator.evaluate()
    metrics["ms_per_image"] = {k: round(1000 * seconds[k], 2) for k in ("preprocess", "network", "decode")}
    return metrics, evaluator.results


def evaluate_model(model, coco_dataset, *, limit=0, progress=True):
    """COCO metrics of a built `SOLO` on a dataset; returns (metrics, results)."""
    return evaluate_engine(KerasEngine(model), coco_dataset, limit=limit, progress=progress)
