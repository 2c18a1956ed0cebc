"""Where a model's mask AP goes: the COCO error analysis (Hoiem et al., ECCV 2012, as the COCO
toolkit's `analyze`) on a detections file that `keras-solo evaluate` wrote.

    python benchmarks/ap_breakdown.py --gt data/cityscapes5/instances_val_all.json \
        --dt runs/RUN/eval_ema/detections.json [--json OUT.json]

Each row removes one kind of error from the one before and gives the segm AP that is left (the mean
over classes of the area-under-PR at one IoU threshold, all sizes, 100 detections per image):

    C75   at IoU 0.75
    C50   at IoU 0.50 (what 0.50-0.75 of mask quality costs: C50 - C75)
    Loc   at IoU 0.10 (localisation: a detection on the object with a poor mask or box)
    Sim   and the detections that overlap (IoU >= 0.1) an object of a similar class (person/rider,
          car/truck/bus) more than any of their own class removed (confusions within a group)
    Oth   ... of any other class
    BG    and the detections that overlap no object at IoU >= 0.1 removed (false positives on
          background); 1 - BG is the cost of the objects never detected (FN)

and, beside it, the same analysis with the small objects (< 32^2 pixels) ignored, the object counts
per size, and the recall at IoU 0.5 per size (the share of objects that some detection finds).
Class groups as Cityscapes' "human" and "vehicle" categories."""

import argparse
import collections
import contextlib
import copy
import io
import json

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

SIMILAR = ({"person", "rider"}, {"car", "truck", "bus"})
AREAS = {"all": [0, 1e10], "small": [0, 32 ** 2], "medium": [32 ** 2, 96 ** 2], "large": [96 ** 2, 1e10],
         "not small": [32 ** 2, 1e10]}


def evaluate(gt, detections, iou, area="all"):
    """(AP, recall) in percent at one IoU threshold: pycocotools' precision table averaged over the
    classes that have objects, and its recall at 100 detections per image."""
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(detections)) if detections else COCO()
        run = COCOeval(gt, dt, "segm")
        run.params.iouThrs = np.array([iou])
        run.params.areaRng, run.params.areaRngLbl = [AREAS[area]], [area]
        run.evaluate()
        run.accumulate()
    precision, recall = run.eval["precision"][0, :, :, 0, -1], run.eval["recall"][0, :, 0, -1]
    valid = recall > -1  # classes with objects of this size
    if not valid.any():
        return None, None
    precision = np.where(precision > -1, precision, 0.0)
    return 100 * float(precision[:, valid].mean()), 100 * float(recall[valid].mean())


def best_overlaps(gt, detections):
    """For each detection: the category and mask IoU of the object (not crowd) it overlaps most,
    overall and within its own class."""
    by_image = collections.defaultdict(list)
    for ann in gt.loadAnns(gt.getAnnIds(iscrowd=False)):
        by_image[ann["image_id"]].append(ann)
    rles = {}
    out = []
    for det in detections:
        objects = by_image.get(det["image_id"], [])
        if not objects:
            out.append((None, 0.0, 0.0))
            continue
        for ann in objects:
            if ann["id"] not in rles:
                rles[ann["id"]] = gt.annToRLE(ann)
        ious = mask_utils.iou([det["segmentation"]], [rles[a["id"]] for a in objects], [0] * len(objects))[0]
        best = int(np.argmax(ious))
        own = max((i for i, a in zip(ious, objects) if a["category_id"] == det["category_id"]), default=0.0)
        out.append((objects[best]["category_id"], float(ious[best]), float(own)))
    return out


def error_kind(det, overlap, names):
    """What removes a detection from the rows: "BG" (it overlaps no object at IoU >= 0.1), "Sim" / "Oth"
    (it overlaps an object of a similar / another class more than any of its own: the COCO analysis
    removes these false positives rather than relabel them), or None (it stays in every row)."""
    category, iou, own = overlap
    if category is None or iou < 0.1:
        return "BG"
    if iou > own and category != det["category_id"]:
        pair = {names[category], names[det["category_id"]]}
        return "Sim" if any(pair <= group for group in SIMILAR) else "Oth"
    return None


def breakdown(gt, detections, kinds, area):
    """The rows of the module doc; `kinds`: `error_kind` of each detection."""
    removed = {"C75": (), "C50": (), "Loc": (), "Sim": ("Sim",), "Oth": ("Sim", "Oth"), "BG": ("Sim", "Oth", "BG")}
    iou = {"C75": 0.75, "C50": 0.5}
    return {row: round(evaluate(gt, [d for d, k in zip(detections, kinds) if k not in gone], iou.get(row, 0.1),
                                area)[0], 2)
            for row, gone in removed.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="COCO instances JSON (keras-solo convert-yolo)")
    parser.add_argument("--dt", required=True, help="detections.json of keras-solo evaluate")
    parser.add_argument("--json", help="write the tables here")
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(args.gt)
    detections = json.load(open(args.dt))
    names = {c["id"]: c["name"] for c in gt.loadCats(gt.getCatIds())}
    kinds = [error_kind(det, overlap, names) for det, overlap in zip(detections, best_overlaps(gt, detections))]
    result = {"gt": args.gt, "dt": args.dt, "detections": len(detections),
              "objects": {}, "recall_iou50": {}, "analysis": {}}
    for area in ("small", "medium", "large"):
        anns = gt.loadAnns(gt.getAnnIds(areaRng=AREAS[area], iscrowd=False))
        result["objects"][area] = len(anns)
        recall = evaluate(gt, detections, 0.5, area)[1]
        result["recall_iou50"][area] = None if recall is None else round(recall, 2)
    for area in ("all", "not small"):
        result["analysis"][area] = breakdown(gt, detections, kinds, area)
    print(f"{len(detections)} detections on {len(gt.getImgIds())} images")
    print("objects per size:", result["objects"], "| recall at IoU 0.5 (%):", result["recall_iou50"])
    print("segm AP (%) with each kind of error removed in turn:")
    print(f"{'':10s}" + "".join(f"{name:>8s}" for name in result["analysis"]["all"]))
    for area, row in result["analysis"].items():
        print(f"{area:10s}" + "".join(f"{value:8.2f}" for value in row.values()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
