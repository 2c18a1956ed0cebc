"""How many training instances lose their grid cell to another instance, per grid choice.

SOLO gives a cell to one instance (the smaller one where several claim it);
an instance whose centre cell goes to a smaller instance on the same level
keeps at most the rest of its centre region. This counts, for a COCO JSON at
a preset's input size and scale ranges, the instances (per level they fall
in) whose centre cell a smaller instance also claims, for each grid choice:

    python benchmarks/grid_collisions.py --config training/edge_cityscapes5.yaml \
        --data data/cityscapes5/instances_train_all.json --grids 20,14,10,8 40,14,10,8 40,24,16,12
"""

import argparse
import collections
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from keras_solo.config import load_config  # noqa: E402
from keras_solo.targets import scale_ranges_for_input  # noqa: E402


def collisions(data, input_size, ranges, grids):
    """(taken, total, small_taken, small_total): level assignments whose centre cell a smaller instance claims."""
    width, height = input_size
    images = {image["id"]: image for image in data["images"]}
    per_image = collections.defaultdict(list)
    for ann in data["annotations"]:
        if not ann.get("iscrowd"):
            per_image[ann["image_id"]].append(ann)
    taken = total = small_taken = small_total = 0
    for image_id, anns in per_image.items():
        image = images[image_id]
        scale = min(width / image["width"], height / image["height"])
        cells = collections.defaultdict(list)
        for ann in anns:
            x, y, w, h = (v * scale for v in ann["bbox"])
            size = math.sqrt(max(w * h, 1e-6))
            for level, (lo, hi) in enumerate(ranges):
                if lo <= size <= hi:
                    s = grids[level]
                    key = (level, int((y + h / 2) / height * s), int((x + w / 2) / width * s))
                    cells[key].append((ann["area"] * scale * scale, ann["area"] < 32 * 32))
        for claims in cells.values():
            claims.sort()
            for rank, (_, small) in enumerate(claims):
                total += 1
                small_total += small
                taken += rank > 0
                small_taken += small and rank > 0
    return taken, total, small_taken, small_total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "training", "edge_cityscapes5.yaml"))
    parser.add_argument("--data", default=os.path.join(ROOT, "data", "cityscapes5", "instances_train_all.json"))
    parser.add_argument("--grids", nargs="+", default=None, help="grid choices, e.g. 20,14,10,8 (default the preset's)")
    args = parser.parse_args()
    model = load_config(args.config).model
    width, height = model.input_size
    ranges = scale_ranges_for_input(model.scale_ranges, (height, width), model.scale_reference_size)
    data = json.load(open(args.data))
    print(f"{args.data} at {width}x{height}, scale ranges {[tuple(round(v, 1) for v in r) for r in ranges]}")
    print("| grids | level assignments | centre cell also claimed by a smaller instance | of the COCO-small ones |")
    print("|---|---|---|---|")
    for text in args.grids or [",".join(map(str, model.grids))]:
        grids = [int(v) for v in text.split(",")]
        taken, total, small_taken, small_total = collisions(data, (width, height), ranges, grids)
        print(f"| {text} | {total} | {taken} ({100 * taken / total:.1f}%) | {small_taken} of {small_total} "
              f"({100 * small_taken / max(small_total, 1):.1f}%) |")


if __name__ == "__main__":
    main()
