"""COCO evaluation around pycocotools (never a re-implementation of AP).

`COCOEvaluator` follows detectron2's protocol (reset / process / evaluate):
detections are RLE-encoded in COCO results format, then `COCOeval` computes
segm AP, AP50, AP75, APs, APm, APl, box AP from the masks' boxes, and a
per-class AP table from the precision array.
"""

import contextlib
import io
import json
import os
import time
import warnings

import numpy as np

from keras_solo import detections as det
from keras_solo.errors import SoloError, check_output, write_json

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
        self.results.extend(det.coco_results(image_id, detections, self.dataset.cat_ids))

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


def inference_functions(model):
    """`(network, decode)`: the model's forward pass and `decode`, compiled
    for the Keras backend (tf.function on TensorFlow, jax.jit on JAX; the
    weights are read when the functions are made, so make them again after
    training further)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return (tf.function(lambda x: model(x, training=False), reduce_retracing=True),
                tf.function(model.decode, reduce_retracing=True))
    if backend == "jax":
        import jax

        return jax.jit(lambda x: model(x, training=False)), jax.jit(model.decode)
    return (lambda x: model(x, training=False)), model.decode


def run_inference(model, coco_dataset, *, limit=0, batch_size=1, progress=True, on_image=None):
    """Runs the model over a dataset and yields per-image detections.

    Args:
        model: a built `SOLO`.
        coco_dataset: `CocoDataset`.
        limit: only the first N images (0 = all).
        on_image: callback(record_image_id, detections, timing) per image.

    Returns:
        dict of timing totals: network_s, decode_s, post_s, images.
    """
    import keras
    from tqdm import tqdm

    width, height = model.input_size
    total = len(coco_dataset.records)
    if limit:
        total = min(total, limit)
    batches = (total + batch_size - 1) // batch_size
    options = dict(image_size=(width, height), max_instances=1, mask_stride=8, batch_size=batch_size, training=False)
    with warnings.catch_warnings():  # instance slots are unused here: only images and image_info
        warnings.simplefilter("ignore")
        if keras.backend.backend() == "tensorflow":
            from keras_solo.data.pipeline import build_dataset

            dataset = build_dataset(coco_dataset, shuffle=False, check_images=True, **options).take(batches)
        else:  # no TensorFlow needed
            from keras_solo.data.loader import SoloPyDataset

            loader = SoloPyDataset(coco_dataset, check_images=True, **options)
            dataset = (loader[index] for index in range(batches))

    network, decode = inference_functions(model)
    timing = {"network_s": 0.0, "decode_s": 0.0, "post_s": 0.0, "images": 0}
    bar = tqdm(total=total, desc="evaluate", unit="img", disable=not progress)
    for images, targets in dataset:
        t0 = time.perf_counter()
        outputs = network(np.asarray(images))
        _ = [np.asarray(v) for v in outputs.values()][0]
        t1 = time.perf_counter()
        decoded = {k: np.asarray(v) for k, v in decode(outputs).items()}
        t2 = time.perf_counter()
        info = np.asarray(targets["image_info"])
        for b in range(images.shape[0]):
            if timing["images"] >= total:
                break
            orig_h, orig_w, scale, float_id = info[b]
            # The unshuffled pipeline yields the records in order; the exact id
            # comes from the record (float32 image_info rounds ids >= 2^24).
            image_id = coco_dataset.records[timing["images"]].image_id
            if abs(float(float_id) - image_id) > max(1.0, 1e-6 * abs(image_id)):
                raise RuntimeError(f"evaluation out of order: image {image_id} expected, "
                                   f"the pipeline gave {float_id:.0f}")
            one = {k: v[b] for k, v in decoded.items()}
            found = det.to_original(one, input_size=(height, width), orig_size=(orig_h, orig_w),
                                    scale=float(scale), mask_thr=model.mask_thr)
            if on_image is not None:
                on_image(int(image_id), found)
            timing["images"] += 1
            bar.update(1)
        timing["network_s"] += t1 - t0
        timing["decode_s"] += t2 - t1
        timing["post_s"] += time.perf_counter() - t2
    bar.close()
    return timing


def evaluate_model(model, coco_dataset, *, limit=0, progress=True):
    """COCO metrics of a model on a dataset; returns (metrics, results).

    Raises:
        SoloError: a bad image file (one line naming it).
    """
    from keras_solo.data.examples import call_with_data_errors

    evaluator = COCOEvaluator(coco_dataset)
    timing = call_with_data_errors(run_inference, model, coco_dataset, limit=limit, progress=progress,
                                   on_image=evaluator.process)
    metrics = evaluator.evaluate()
    n = max(1, timing["images"])
    metrics["timing_ms_per_image"] = {
        "network": round(1000 * timing["network_s"] / n, 2),
        "decode": round(1000 * timing["decode_s"] / n, 2),
        "undo_letterbox": round(1000 * timing["post_s"] / n, 2),
    }
    return metrics, evaluator.results


def apply_eval_overrides(model, overrides):
    """`--set eval.key=value` on a loaded model's inference thresholds."""
    from keras_solo.config import EvalConfig, config_from_dict, parse_override
    from keras_solo.model.solo import split_nms_pre

    allowed = {f for f in EvalConfig.__dataclass_fields__} - {"batch_size"}
    values = {}
    for text in overrides or ():
        key, value = parse_override(text)
        section, _, name = key.partition(".")
        if section != "eval" or name not in allowed:
            raise SoloError(f"--set {key}: only eval.* keys apply here ({', '.join(sorted(allowed))})")
        values[name] = value
    if values:
        current = {k: getattr(model, k) for k in allowed if hasattr(model, k)}
        current["nms_kernel"], current["nms_sigma"] = model.nms_kernel, model.nms_sigma
        current["nms_pool"], current["mask_downsample"] = model.nms_pool, model.mask_downsample
        current.update(values)
        checked = config_from_dict({"eval": current}, "--set").eval
        for k in values:
            setattr(model, k, getattr(checked, k))
        model.nms_pre_per_level = split_nms_pre(model.nms_pre, model.grids, model.num_classes)


def evaluate_command(args):
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model)), "eval")
    check_output(out)  # before TensorFlow, the model load and the whole evaluation
    metrics_path = os.path.join(out, "metrics.json")
    if not args.overwrite:  # before TensorFlow and the model load
        held = [n for n in ("metrics.json", "detections.json") if os.path.exists(os.path.join(out, n))]
        if held:
            raise SoloError(f"{out}: already holds {' and '.join(held)}; use --overwrite or another --out")

    from keras_solo.data.coco import load_coco
    from keras_solo.model.solo import load_model

    model = load_model(args.model)
    apply_eval_overrides(model, getattr(args, "set", ()))
    coco = load_coco(args.data, args.images, class_names=model.class_names)
    os.makedirs(out, exist_ok=True)
    metrics, results = evaluate_model(model, coco, limit=args.limit)
    metrics.update({"model": os.path.abspath(args.model), "data": os.path.abspath(args.data)})
    write_json(os.path.join(out, "detections.json"), results, what="detections", indent=None)
    write_json(metrics_path, metrics, what="metrics")
    print(format_metrics(metrics))
    t = metrics["timing_ms_per_image"]
    print(f"\nms/image: network {t['network']}, decode {t['decode']}, undo letterbox {t['undo_letterbox']}")
    print(f"wrote {metrics_path} and detections.json")
