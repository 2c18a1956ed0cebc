"""Dataset statistics and overlay pictures for a COCO instances file.

:func:`inspect_data` loads a COCO file with :func:`keras_solo.data.coco.load_coco`
and counts instances per class, per COCO area bucket (small < 32^2 px,
medium < 96^2, large otherwise, using each annotation's ``area`` field as
``COCOeval`` does), instances per image and negative images; it can also draw
a few images with their masks and class names. :func:`format_report` prints
the counts as a text table.

Crowd annotations are counted apart (``crowd``) and left out of the area
buckets and the per-image counts, as COCO evaluation ignores them.
"""

from pathlib import Path

import cv2
import numpy as np

from keras_solo.data.coco import ann_to_mask, decode_instances, load_coco
from keras_solo.runtime.detections import draw_overlay as runtime_draw_overlay

AREA_SMALL = 32**2
AREA_MEDIUM = 96**2
BUCKETS = ("small", "medium", "large")


def area_bucket(area):
    """Returns the COCO area bucket ``"small"``, ``"medium"`` or ``"large"``."""
    if area < AREA_SMALL:
        return "small"
    if area < AREA_MEDIUM:
        return "medium"
    return "large"


def inspect_data(json_path, image_root=None, out_dir=None, num_overlays=4, *, class_names=None):
    """Counts a COCO dataset's instances and draws a few overlays.

    Args:
        json_path: COCO instances JSON.
        image_root: folder the images' ``file_name`` entries are relative to.
            Defaults to the JSON's folder.
        out_dir: folder for overlay PNGs (created); None draws none. Defaults
            to None.
        num_overlays: number of overlays: images with instances, evenly
            spread over the file. Defaults to 4.
        class_names: optional class subset / order, as in ``load_coco``.
            Defaults to all categories.

    Returns:
        A dict with ``json_path``, ``images``, ``instances`` (non-crowd),
        ``crowd``, ``negatives`` (images without a non-crowd instance),
        ``per_class`` ``{name: {"instances", "crowd", "images", "small",
        "medium", "large"}}``, ``area`` ``{"small", "medium", "large"}``,
        ``per_image`` ``{"min", "mean", "max", "histogram": {n: images}}``,
        ``loader`` (``CocoDataset.stats``) and ``overlays`` (written paths).

    Raises:
        SoloError: from ``load_coco`` / ``decode_instances`` (bad JSON, an
            unreadable image).
    """
    dataset = load_coco(json_path, image_root, class_names=class_names)
    per_class = {
        name: {"instances": 0, "crowd": 0, "images": 0, **dict.fromkeys(BUCKETS, 0)} for name in dataset.class_names
    }
    area = dict.fromkeys(BUCKETS, 0)
    counts = []
    for record in dataset.records:
        seen = set()
        instances = 0
        for ann in record.annotations:
            name = dataset.class_names[ann.label]
            seen.add(name)
            if ann.iscrowd:
                per_class[name]["crowd"] += 1
                continue
            bucket = area_bucket(_area(ann, record))
            per_class[name]["instances"] += 1
            per_class[name][bucket] += 1
            area[bucket] += 1
            instances += 1
        for name in seen:
            per_class[name]["images"] += 1
        counts.append(instances)
    counts = np.asarray(counts, np.int64)
    values, freq = np.unique(counts, return_counts=True)
    stats = {
        "json_path": str(json_path),
        "images": len(dataset.records),
        "instances": int(counts.sum()),
        "crowd": sum(c["crowd"] for c in per_class.values()),
        "negatives": int((counts == 0).sum()),
        "per_class": per_class,
        "area": area,
        "per_image": {
            "min": int(counts.min()),
            "mean": float(counts.mean()),
            "max": int(counts.max()),
            "histogram": {int(v): int(f) for v, f in zip(values, freq)},
        },
        "loader": dict(dataset.stats),
        "overlays": [],
    }
    if out_dir is not None and num_overlays > 0:
        stats["overlays"] = _write_overlays(dataset, counts, Path(out_dir), num_overlays)
    return stats


def _area(ann, record):
    """The annotation's ``area`` field, or its rasterised area when absent."""
    if ann.area is not None:
        return ann.area
    return float(ann_to_mask(ann.segmentation, record.height, record.width).sum())


def _write_overlays(dataset, counts, out_dir, num_overlays):
    candidates = np.flatnonzero(counts > 0)
    if len(candidates) == 0:
        candidates = np.arange(len(dataset.records))
    picks = np.unique(np.round(np.linspace(0, len(candidates) - 1, min(num_overlays, len(candidates)))).astype(int))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in candidates[picks]:
        record = dataset.records[int(index)]
        decoded = decode_instances(dataset, record)
        canvas = draw_overlay(decoded, dataset.class_names)
        path = out_dir / f"overlay_{record.image_id:06d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        paths.append(str(path))
    return paths


def draw_overlay(decoded, class_names, alpha=0.5):
    """The ground truth of a ``decode_instances`` dict drawn by the package's one drawer
    (`keras_solo.runtime.detections.draw_overlay`): crowd regions grey, tagged "(crowd)"."""
    boxes = np.asarray(decoded["boxes"], np.float32).reshape(-1, 4).copy()
    boxes[:, 2:] -= boxes[:, :2]  # x1 y1 x2 y2 -> COCO x y w h
    return runtime_draw_overlay(decoded["image"], {"masks": decoded["masks"], "labels": decoded["labels"],
                                                   "boxes": boxes, "iscrowd": np.asarray(decoded["iscrowd"])},
                                class_names, alpha=alpha)


def format_report(stats):
    """Formats :func:`inspect_data` stats as a text table.

    Args:
        stats: the dict returned by :func:`inspect_data`.

    Returns:
        A multi-line string (no trailing newline).
    """
    columns = ("instances", "crowd", "images", *BUCKETS)
    width = max([len("class"), len("total")] + [len(name) for name in stats["per_class"]])
    header = f"{'class':<{width}}" + "".join(f"{c:>10}" for c in columns)
    lines = [
        f"{stats['json_path']}: {stats['images']} images, {stats['instances']} instances, "
        f"{stats['crowd']} crowd, {stats['negatives']} negatives",
        header,
        "-" * len(header),
    ]
    totals = dict.fromkeys(columns, 0)
    for name, row in stats["per_class"].items():
        lines.append(f"{name:<{width}}" + "".join(f"{row[c]:>10}" for c in columns))
        for c in columns:
            totals[c] += row[c]
    totals["images"] = stats["images"] - stats["negatives"]  # images with an instance
    lines.append("-" * len(header))
    lines.append(f"{'total':<{width}}" + "".join(f"{totals[c]:>10}" for c in columns))
    per_image = stats["per_image"]
    lines.append(
        f"instances per image: min {per_image['min']}, mean {per_image['mean']:.2f}, max {per_image['max']}"
    )
    histogram = "  ".join(f"{n}:{count}" for n, count in sorted(per_image["histogram"].items()))
    lines.append(f"histogram (instances: images): {histogram}")
    for path in stats["overlays"]:
        lines.append(f"overlay: {path}")
    return "\n".join(lines)
