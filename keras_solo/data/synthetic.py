"""A deterministic, road-scene-like synthetic COCO dataset.

:func:`make_synthetic` paints street scenes (sky, buildings, a road trapezoid
with lane markings, noise texture) with the paper's five classes drawn as
distinct, textured shapes:

- person: head, torso, arms and legs;
- rider: a person seated on a bicycle or a motorbike (the two-wheeler is part
  of the rider's mask, unlike Cityscapes where the bicycle is its own class);
- car: side view (rounded body, cabin with windows, wheels) or rear view;
- truck: cab + cargo box (side view) or a tall box (rear view);
- bus: long box with a row of windows, doors, wheels (side) or a windscreen
  (front view).

It exercises what grid attention is for: groups of 1-4 instances of one class
stand side by side and partly occlude each other. Instances are painted in
depth order (far first, i.e. smaller foot y first) and each annotation holds the
instance's *visible* mask after occlusion. Perspective makes objects near the
horizon small, so areas span COCO small (< 32^2 px), medium (< 96^2) and large
at the default 256x128 size. A fraction of images is left empty (negatives).

Dataset layout written under ``out_dir``::

    out_dir/
      instances_train.json   file_name "train/000001.png"
      instances_val.json     file_name "val/000161.png"
      train/000001.png ...
      val/000161.png ...

``file_name`` is relative to the JSON's directory, so
``load_coco(out_dir / "instances_train.json")`` finds the images with its
default ``image_root``. Image ids are unique across both splits. Category ids
are 1..5 in the order person, rider, car, truck, bus.

The same ``seed`` (and arguments) gives byte-identical files; every image draws
from its own random stream seeded by ``(seed, image index)``.
"""

import re
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from keras_solo.config import PAPER_CLASSES
from keras_solo.data.convert import write_json
from keras_solo.data.inspect import area_bucket
from keras_solo.errors import SoloError

CLASS_NAMES = PAPER_CLASSES
CATEGORIES = tuple(
    {"id": i + 1, "name": name, "supercategory": "human" if i < 2 else "vehicle"}
    for i, name in enumerate(CLASS_NAMES)
)

# Relative frequency of each class in a group, and the group size range.
_CLASS_PROBS = np.array([0.30, 0.14, 0.30, 0.12, 0.14])
_GROUP_MAX = {"person": 4, "rider": 3, "car": 4, "truck": 2, "bus": 2}
_SHIFT = 4  # cv2 fixed-point fractional bits: sub-pixel drawing of small shapes
_ONE = 1 << _SHIFT


def make_synthetic(
    out_dir,
    *,
    images=200,
    size=(256, 128),
    seed=0,
    val_fraction=0.2,
    empty_fraction=0.05,
    min_area=6,
    mask_format="rle",
    image_format="png",
    overwrite=False,
):
    """Writes a synthetic road-scene COCO dataset (layout in the module doc).

    Args:
        out_dir: folder to write into (created if missing).
        images: total number of images (train + val). Defaults to 200.
        size: image size ``(W, H)``. Defaults to ``(256, 128)``.
        seed: random seed; the same seed gives byte-identical files.
            Defaults to 0.
        val_fraction: fraction of images in the val split (rounded; the
            train split keeps at least one image; no val files are written
            when it rounds to 0). Defaults to 0.2.
        empty_fraction: fraction of images per split without any instance
            (rounded; the train split gets at least one when this is > 0 and
            it has 2 or more images). Defaults to 0.05.
        min_area: instances whose visible area (px) is below this are
            dropped. Defaults to 6.
        mask_format: ``"rle"`` (exact visible masks, compressed COCO RLE) or
            ``"polygon"`` (outer ``cv2.findContours`` polygons; approximate:
            holes cut by occluders are filled, edges move by up to a pixel).
            Defaults to ``"rle"``.
        image_format: ``"png"`` (lossless) or ``"jpg"`` (quality 95).
            Defaults to ``"png"``.
        overwrite: replace existing JSON files (and this generator's image
            files) in ``out_dir``. Defaults to False.

    Returns:
        A dict with ``paths`` (``root``, ``train``, ``val``: the JSON paths,
        ``val`` None when the split is empty; ``image_root``: ``root``) and ``stats`` (``train``, ``val``, ``total``,
        each with ``images``, ``empty_images``, ``instances``, ``per_class``
        ``{name: count}``, ``area`` ``{"small", "medium", "large": count}``,
        ``dropped_small`` (instances under ``min_area``), ``max_per_image``
        and ``same_class_overlap_images`` (images holding two instances of
        one class whose boxes overlap)), and ``summary``, a one-line text.

    Raises:
        SoloError: the JSON files exist and ``overwrite`` is False.
        ValueError: an argument is out of range.
    """
    width, height = (int(v) for v in size)
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    if width < 32 or height < 32:
        raise ValueError(f"size must be at least 32x32, got {size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0.0 <= empty_fraction <= 1.0:
        raise ValueError(f"empty_fraction must be in [0, 1], got {empty_fraction}")
    if mask_format not in ("rle", "polygon"):
        raise ValueError(f"mask_format must be 'rle' or 'polygon', got {mask_format!r}")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")

    root = Path(out_dir)
    json_paths = {split: root / f"instances_{split}.json" for split in ("train", "val")}
    for path in json_paths.values():
        if path.exists() and not overwrite:
            raise SoloError(f"{path}: already exists (pass overwrite=True, or --overwrite, to replace it)")

    num_val = int(round(images * val_fraction))
    num_val = min(num_val, images - 1)
    splits = {"train": images - num_val, "val": num_val}

    # Which images of each split are negatives: chosen from a stream of its own,
    # so the choice does not depend on the image contents.
    choice_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    empty = {}
    for split, count in splits.items():
        num_empty = int(round(count * empty_fraction))
        if split == "train" and empty_fraction > 0 and count >= 2:
            num_empty = max(num_empty, 1)
        empty[split] = set(choice_rng.choice(count, size=min(num_empty, count), replace=False).tolist())

    encode = {"png": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 3]), "jpg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95])}
    suffix, write_params = encode[image_format]

    stats = {}
    image_id = 0
    ann_id = 0
    for split, count in splits.items():
        if count == 0:  # val_fraction=0: no val files (an empty COCO file is not loadable)
            stats[split] = _empty_stats()
            continue
        split_dir = root / split
        split_dir.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for stale in split_dir.iterdir():
                if re.fullmatch(r"\d{6}\.(png|jpg)", stale.name):
                    stale.unlink()
        split_stats = _empty_stats()
        coco_images, coco_anns = [], []
        for index in range(count):
            image_id += 1
            rng = np.random.default_rng(np.random.SeedSequence([seed, image_id]))
            image, masks, labels, dropped = _render_scene(
                rng, width, height, with_objects=index not in empty[split], min_area=min_area
            )
            file_name = f"{split}/{image_id:06d}{suffix}"
            ok, data = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), write_params)
            if not ok:  # pragma: no cover - cv2 always encodes uint8 RGB
                raise SoloError(f"{root / file_name}: image encoding failed")
            (root / file_name).write_bytes(data.tobytes())
            coco_images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})

            boxes, kept_labels = [], []
            for mask, label in zip(masks, labels):
                segmentation, area, bbox = _encode_mask(mask, mask_format)
                if area < min_area:
                    dropped += 1
                    continue
                ann_id += 1
                coco_anns.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": label + 1,
                        "segmentation": segmentation,
                        "area": area,
                        "bbox": bbox,
                        "iscrowd": 0,
                    }
                )
                boxes.append(bbox)
                kept_labels.append(label)
                split_stats["per_class"][CLASS_NAMES[label]] += 1
                split_stats["area"][area_bucket(area)] += 1
            split_stats["images"] += 1
            split_stats["instances"] += len(kept_labels)
            split_stats["empty_images"] += not kept_labels
            split_stats["dropped_small"] += dropped
            split_stats["max_per_image"] = max(split_stats["max_per_image"], len(kept_labels))
            split_stats["same_class_overlap_images"] += _has_same_class_overlap(boxes, kept_labels)

        dataset = {
            "info": {"description": f"keras_solo synthetic road scenes ({split}, seed {seed})", "version": "1.0"},
            "licenses": [],
            "images": coco_images,
            "annotations": coco_anns,
            "categories": [dict(c) for c in CATEGORIES],
        }
        write_json(json_paths[split], dataset, overwrite=overwrite)
        stats[split] = split_stats

    total = _empty_stats()
    for split_stats in stats.values():
        for key, value in split_stats.items():
            if isinstance(value, dict):
                for name, n in value.items():
                    total[key][name] += n
            elif key == "max_per_image":
                total[key] = max(total[key], value)
            else:
                total[key] += value
    stats["total"] = total
    paths = {
        "root": str(root),
        "image_root": str(root),
        "train": str(json_paths["train"]),
        "val": str(json_paths["val"]) if splits["val"] else None,
    }
    summary = (
        f"{total['images']} images ({stats['train']['images']} train, {stats['val']['images']} val; "
        f"{total['empty_images']} empty), {total['instances']} instances "
        f"(small {total['area']['small']}, medium {total['area']['medium']}, large {total['area']['large']})"
    )
    return {"paths": paths, "stats": stats, "summary": summary}


def _empty_stats():
    return {
        "images": 0,
        "empty_images": 0,
        "instances": 0,
        "per_class": {name: 0 for name in CLASS_NAMES},
        "area": {"small": 0, "medium": 0, "large": 0},
        "dropped_small": 0,
        "max_per_image": 0,
        "same_class_overlap_images": 0,
    }


def _has_same_class_overlap(boxes, labels):
    """True when two instances of one class have overlapping [x, y, w, h] boxes."""
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            if labels[a] != labels[b]:
                continue
            xa, ya, wa, ha = boxes[a]
            xb, yb, wb, hb = boxes[b]
            if min(xa + wa, xb + wb) > max(xa, xb) and min(ya + ha, yb + hb) > max(ya, yb):
                return True
    return False


def _encode_mask(mask, mask_format):
    """Encodes an (H, W) 0/1 mask. Returns (segmentation, area, [x, y, w, h])."""
    height, width = mask.shape
    if mask_format == "rle":
        rle = mask_utils.encode(np.asfortranarray(mask))
        segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    else:
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        segmentation = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
        if not segmentation:
            return [], 0, [0.0, 0.0, 0.0, 0.0]
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    area = int(mask_utils.area(rle))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return segmentation, area, bbox


# ---------------------------------------------------------------------------
# Scene rendering. Colours are RGB; arrays are (H, W, 3) float32 until the end.


def _render_scene(rng, width, height, *, with_objects, min_area):
    """Paints one scene.

    Returns:
        image (H, W, 3) uint8 RGB, a list of visible (H, W) uint8 masks, their
        labels (0..4), and the number of instances dropped as too small.
    """
    horizon = height * rng.uniform(0.36, 0.44)
    image = _background(rng, width, height, horizon)
    if not with_objects:
        return _finish(rng, image), [], [], 0

    instances = _layout(rng, width, height, horizon)
    # Depth order: far (small foot y) first, so nearer instances occlude.
    instances.sort(key=lambda inst: inst["foot_y"])
    owner = np.full((height, width), -1, np.int32)  # index of the instance seen at each pixel
    for k, inst in enumerate(instances):
        sprite = np.zeros((height, width, 3), np.float32)
        mask = np.zeros((height, width), np.uint8)
        _DRAW[inst["label"]](_Painter(sprite, mask), rng, inst)
        if not mask.any():  # entirely outside the image
            continue
        _shadow(image, inst)
        _texture(rng, sprite, mask)
        region = mask.astype(bool)
        image[region] = sprite[region]
        owner[region] = k

    masks, kept, dropped = [], [], 0
    for k, inst in enumerate(instances):
        label = inst["label"]
        visible = (owner == k).astype(np.uint8)
        if int(visible.sum()) < min_area:
            dropped += int(visible.any())
            continue
        masks.append(visible)
        kept.append(label)
    return _finish(rng, image), masks, kept, dropped


def _finish(rng, image):
    """Adds sensor noise and converts to uint8."""
    image = image + rng.normal(0.0, 3.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _smooth_noise(rng, height, width, cell):
    """Low-frequency noise in about [-1, 1]: a coarse random grid, resized."""
    coarse = rng.normal(0.0, 0.5, (max(2, height // cell + 2), max(2, width // cell + 2))).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _background(rng, width, height, horizon):
    """Sky gradient, buildings, ground, road trapezoid and lane markings."""
    image = np.zeros((height, width, 3), np.float32)
    hy = int(round(horizon))
    # Sky: a vertical gradient, tinted per image (clear to overcast).
    top = np.array([70, 120, 200], np.float32) + rng.uniform(-25, 40, 3)
    low = np.array([185, 200, 215], np.float32) + rng.uniform(-20, 20, 3)
    t = np.linspace(0.0, 1.0, max(hy, 1), dtype=np.float32)[:, None, None]
    image[:hy] = top * (1 - t) + low * t
    # Buildings along the horizon.
    x = rng.uniform(-0.1, 0.05) * width
    while x < width:
        bw = rng.uniform(0.06, 0.2) * width
        bh = rng.uniform(0.05, 0.3) * height
        shade = rng.uniform(90, 190)
        colour = np.clip(shade + rng.uniform(-25, 25, 3), 0, 255)
        cv2.rectangle(image, (int(x), int(horizon - bh)), (int(x + bw), hy), colour.tolist(), -1)
        for wy in np.arange(horizon - bh + 3, horizon - 3, max(3.0, 0.03 * height)):
            for wx in np.arange(x + 2, x + bw - 2, max(3.0, 0.025 * width)):
                if rng.random() < 0.6:
                    cv2.rectangle(image, (int(wx), int(wy)), (int(wx) + 1, int(wy) + 1), (colour * 0.6).tolist(), -1)
        x += bw + rng.uniform(0.0, 0.05) * width
    # Ground (sidewalk / verge) below the horizon.
    ground = np.array([125, 125, 118], np.float32) + rng.uniform(-25, 25, 3)
    image[hy:] = ground
    # Road: a trapezoid from the vanishing point to the bottom edge.
    vx = width * rng.uniform(0.4, 0.6)
    bottom_left = width * rng.uniform(-0.35, 0.1)
    bottom_right = width * rng.uniform(0.9, 1.35)
    road = np.array(
        [[vx - 0.01 * width, horizon], [vx + 0.01 * width, horizon], [bottom_right, height], [bottom_left, height]]
    )
    road_colour = [rng.uniform(60, 100)] * 3
    cv2.fillPoly(image, [np.round(road * _ONE).astype(np.int32)], road_colour, cv2.LINE_8, _SHIFT)
    # Lane markings: dashes evenly spaced in depth (z = 1 / t), so they shrink
    # and bunch up towards the horizon.
    for lane in (0.5, rng.uniform(0.2, 0.35), rng.uniform(0.65, 0.8)):
        bx = bottom_left + lane * (bottom_right - bottom_left)
        phase = rng.uniform(0, 1)
        for z in np.arange(1.0 + phase, 25.0, 1.4):
            t0, t1 = 1.0 / z, 1.0 / (z + 0.7)
            quad = []
            for tt, side in ((t0, -1), (t0, 1), (t1, 1), (t1, -1)):
                cx = vx + tt * (bx - vx)
                quad.append([cx + side * tt * 0.012 * width, horizon + tt * (height - horizon)])
            cv2.fillPoly(image, [np.round(np.array(quad) * _ONE).astype(np.int32)], (225, 225, 215), cv2.LINE_8, _SHIFT)
    # Texture: low-frequency stains plus grain.
    image += 10.0 * _smooth_noise(rng, height, width, 8)[..., None]
    image += rng.normal(0.0, 4.0, (height, width, 1)).astype(np.float32)
    return image


def _layout(rng, width, height, horizon):
    """Places groups of same-class instances; returns instance dicts."""
    instances = []
    for _ in range(int(rng.integers(1, 6))):
        label = int(rng.choice(len(CLASS_NAMES), p=_CLASS_PROBS))
        name = CLASS_NAMES[label]
        count = 1 if rng.random() < 0.35 else int(rng.integers(2, _GROUP_MAX[name] + 1))
        # Depth t: 0 at the horizon, 1 at the bottom edge (t > 1: cut by the
        # bottom edge). Half log-uniform (far, small objects are common), half
        # uniform over the near range (medium and large ones).
        if rng.random() < 0.5:
            depth = float(np.exp(rng.uniform(np.log(0.1), np.log(1.4))))
        else:
            depth = float(rng.uniform(0.4, 1.4))
        unit = depth * height  # px per size unit at this depth
        direction = 1 if rng.random() < 0.5 else -1
        cx = rng.uniform(-0.05, 1.05) * width
        view = "side" if rng.random() < 0.6 else "end"
        facing = 1 if rng.random() < 0.5 else -1
        for _member in range(count):
            jitter = 1.0 + rng.uniform(-0.08, 0.08)
            inst = {
                "label": label,
                "cx": cx,
                "foot_y": horizon + depth * jitter * (height - horizon),
                "unit": unit * jitter * _SIZE[name],
                "view": view if name != "person" else "side",
                "facing": facing,
            }
            instances.append(inst)
            # The next member stands beside this one, overlapping it partly.
            cx += direction * _WIDTH[name][inst["view"]] * inst["unit"] * rng.uniform(0.45, 0.95)
    return instances


# Size multiplier of each class's drawing unit (a unit = depth * image height):
# vehicles drawn at the person's scale would be too small next to people.
_SIZE = {"person": 1.0, "rider": 1.0, "car": 1.25, "truck": 1.35, "bus": 1.3}
# Approximate instance width in drawing units.
_WIDTH = {
    "person": {"side": 0.2, "end": 0.2},
    "rider": {"side": 0.5, "end": 0.2},
    "car": {"side": 0.95, "end": 0.5},
    "truck": {"side": 1.3, "end": 0.6},
    "bus": {"side": 1.7, "end": 0.62},
}


def _shadow(image, inst):
    """Darkens an ellipse under the instance's feet (not part of any mask)."""
    name = CLASS_NAMES[inst["label"]]
    half = 0.5 * _WIDTH[name][inst["view"]] * inst["unit"]
    axes = (max(1, int(half * 1.05)), max(1, int(0.04 * inst["unit"])))
    centre = (int(inst["cx"]), int(inst["foot_y"]))
    shade = np.zeros(image.shape[:2], np.uint8)
    cv2.ellipse(shade, centre, axes, 0, 0, 360, 1, -1)
    image[shade.astype(bool)] *= 0.6


def _texture(rng, sprite, mask):
    """Per-instance texture: vertical shading times noise or stripes, in the mask."""
    x, y, w, h = cv2.boundingRect(mask)
    crop = sprite[y : y + h, x : x + w]
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    shading = 1.12 - 0.25 * rows
    kind = rng.integers(0, 3)
    if kind == 0:  # grainy
        pattern = rng.normal(0.0, rng.uniform(0.03, 0.1), (h, w)).astype(np.float32)
    elif kind == 1:  # stripes
        period = rng.uniform(2.5, 8.0)
        pattern = 0.08 * np.sin(2 * np.pi * np.arange(h, dtype=np.float32)[:, None] / period + rng.uniform(0, 6.3))
        pattern = np.broadcast_to(pattern, (h, w))
    else:  # blotchy
        pattern = 0.12 * _smooth_noise(rng, h, w, 4)
    crop *= (shading * (1.0 + pattern))[..., None]


def _jitter(rng, colour, amount=25):
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


_SKIN = ((240, 200, 170), (200, 150, 110), (150, 100, 70), (95, 65, 45))
_TYRE = (25, 25, 28)
_GLASS = (70, 95, 120)


class _Painter:
    """Draws parts into an instance's colour sprite and its 0/1 mask.

    Coordinates are float pixels (drawn with cv2 fixed point, ``_SHIFT`` bits);
    later parts overwrite earlier ones in the sprite, the mask is their union.
    """

    def __init__(self, sprite, mask):
        self.sprite = sprite
        self.mask = mask

    @staticmethod
    def _fixed(points):
        return np.round(np.asarray(points, np.float64) * _ONE).astype(np.int32)

    def poly(self, points, colour):
        pts = [self._fixed(points)]
        cv2.fillPoly(self.mask, pts, 1, cv2.LINE_8, _SHIFT)
        cv2.fillPoly(self.sprite, pts, [float(c) for c in colour], cv2.LINE_8, _SHIFT)

    def rect(self, x0, y0, x1, y1, colour, radius=0.0):
        self.poly(_rounded_rect(x0, y0, x1, y1, radius), colour)

    def circle(self, centre, radius, colour):
        c = tuple(int(v) for v in self._fixed(centre))
        r = max(int(round(radius * _ONE)), _ONE // 2)
        cv2.circle(self.mask, c, r, 1, -1, cv2.LINE_8, _SHIFT)
        cv2.circle(self.sprite, c, r, [float(v) for v in colour], -1, cv2.LINE_8, _SHIFT)

    def line(self, p0, p1, thickness, colour):
        a, b = (tuple(int(v) for v in self._fixed(p)) for p in (p0, p1))
        t = max(1, int(round(thickness)))
        cv2.line(self.mask, a, b, 1, t, cv2.LINE_8, _SHIFT)
        cv2.line(self.sprite, a, b, [float(v) for v in colour], t, cv2.LINE_8, _SHIFT)


def _rounded_rect(x0, y0, x1, y1, radius):
    """Polygon points of a rectangle with rounded corners."""
    radius = max(0.0, min(radius, 0.5 * (x1 - x0), 0.5 * (y1 - y0)))
    if radius < 0.5:
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    points = []
    corners = (
        (x1 - radius, y0 + radius, -90),
        (x1 - radius, y1 - radius, 0),
        (x0 + radius, y1 - radius, 90),
        (x0 + radius, y0 + radius, 180),
    )
    for cx, cy, start in corners:
        for angle in np.deg2rad(np.linspace(start, start + 90, 5)):
            points.append([cx + radius * np.cos(angle), cy + radius * np.sin(angle)])
    return points


def _draw_person(p, rng, inst, *, seated=None):
    """Head circle, torso, arms and two legs. ``seated`` = (hip x, hip y)."""
    u, cx, foot = inst["unit"], inst["cx"], inst["foot_y"]
    h = 0.62 * u * rng.uniform(0.9, 1.1)
    shirt = _jitter(rng, rng.uniform(30, 230, 3), 10)
    pants = _jitter(rng, rng.choice([[40, 45, 70], [30, 30, 35], [90, 80, 70], [60, 80, 120]]), 15)
    skin = _jitter(rng, _SKIN[int(rng.integers(len(_SKIN)))], 10)
    limb = max(1.0, 0.085 * h)
    lean = 0.0
    if seated is None:
        hip = (cx, foot - 0.47 * h)
        stride = rng.uniform(-0.12, 0.12) * h
        p.line(hip, (cx - stride, foot - 0.02 * h), limb, pants)
        p.line(hip, (cx + stride, foot - 0.02 * h), limb, pants)
    else:
        hip = seated
        lean = 0.12 * h * inst["facing"]
        knee = (hip[0] + 0.18 * h * inst["facing"], hip[1] + 0.05 * h)
        p.line(hip, knee, limb, pants)
        p.line(knee, (knee[0] - 0.02 * h * inst["facing"], hip[1] + 0.33 * h), limb, pants)
    shoulder = (hip[0] + lean, hip[1] - 0.36 * h)
    half = 0.13 * h
    p.poly(
        [[hip[0] - 0.1 * h, hip[1] + 0.02 * h], [hip[0] + 0.1 * h, hip[1] + 0.02 * h],
         [shoulder[0] + half, shoulder[1]], [shoulder[0] - half, shoulder[1]]],
        shirt,
    )
    p.circle(shoulder, half * 0.7, shirt)
    swing = rng.uniform(-0.1, 0.1) * h if seated is None else 0.25 * h * inst["facing"]
    for side in (-1, 1):
        p.line((shoulder[0] + side * half * 0.8, shoulder[1] + 0.02 * h),
               (shoulder[0] + side * half + swing, shoulder[1] + 0.3 * h), 0.75 * limb, shirt)
    p.circle((shoulder[0], shoulder[1] - 0.1 * h), 0.085 * h, skin)
    if rng.random() < 0.5:  # hair or helmet
        p.rect(shoulder[0] - 0.085 * h, shoulder[1] - 0.2 * h, shoulder[0] + 0.085 * h, shoulder[1] - 0.13 * h,
               _jitter(rng, (40, 30, 25), 20), 0.03 * h)


def _draw_rider(p, rng, inst):
    """A person seated on a bicycle or motorbike (side) or seen from behind."""
    u, cx, foot, f = inst["unit"], inst["cx"], inst["foot_y"], inst["facing"]
    frame = _jitter(rng, rng.uniform(40, 220, 3), 10)
    if inst["view"] == "end":
        # From behind: one narrow wheel, the rider above it.
        p.rect(cx - 0.03 * u, foot - 0.3 * u, cx + 0.03 * u, foot, _TYRE, 0.02 * u)
        p.rect(cx - 0.1 * u, foot - 0.34 * u, cx + 0.1 * u, foot - 0.3 * u, frame, 0.01 * u)
        _draw_person(p, rng, dict(inst, facing=0), seated=(cx, foot - 0.3 * u))
        return
    radius = 0.16 * u
    motor = rng.random() < 0.4
    rear, front = (cx - f * 0.27 * u, foot - radius), (cx + f * 0.27 * u, foot - radius)
    for wheel in (rear, front):
        p.circle(wheel, radius, _TYRE)
        p.circle(wheel, radius * 0.72, (150, 150, 155) if not motor else (60, 60, 65))
    seat = (cx - f * 0.08 * u, foot - 2.1 * radius)
    thick = max(1.0, 0.03 * u)
    if motor:
        p.poly([[rear[0], rear[1] - 0.3 * radius], [front[0] - f * 0.3 * radius, front[1] - 0.9 * radius],
                [front[0] - f * 0.6 * radius, seat[1] - 0.2 * radius], [seat[0], seat[1]]], frame)
    else:
        crank = (cx, foot - radius)
        for a, b in ((rear, seat), (seat, crank), (crank, rear), (seat, (front[0] - f * 0.3 * radius, seat[1])),
                     ((front[0] - f * 0.3 * radius, seat[1]), crank), ((front[0] - f * 0.3 * radius, seat[1]), front)):
            p.line(a, b, thick, frame)
    bar = front[0] - f * 0.3 * radius
    p.line((bar + f * 0.05 * radius, seat[1] - 0.1 * radius), (bar - f * 0.05 * radius, seat[1] - 0.5 * radius),
           thick, (40, 40, 40))  # handlebar
    _draw_person(p, rng, inst, seated=seat)


def _wheel(p, centre, radius):
    p.circle(centre, radius, _TYRE)
    p.circle(centre, radius * 0.5, (140, 140, 145))


def _draw_car(p, rng, inst):
    """Side view: body, cabin with two windows, wheels, lights; or a rear view."""
    u, cx, foot, f = inst["unit"], inst["cx"], inst["foot_y"], inst["facing"]
    paint = _jitter(rng, rng.choice([[200, 30, 30], [30, 60, 160], [220, 220, 220], [30, 30, 30], [150, 150, 155],
                                     [30, 120, 60], [230, 190, 40]]), 30)
    if inst["view"] == "end":
        half = 0.25 * u * rng.uniform(0.9, 1.1)
        p.rect(cx - half * 0.9, foot - 0.08 * u, cx - half * 0.55, foot, _TYRE)
        p.rect(cx + half * 0.55, foot - 0.08 * u, cx + half * 0.9, foot, _TYRE)
        p.rect(cx - half, foot - 0.26 * u, cx + half, foot - 0.04 * u, paint, 0.04 * u)
        p.poly([[cx - half * 0.92, foot - 0.25 * u], [cx + half * 0.92, foot - 0.25 * u],
                [cx + half * 0.7, foot - 0.42 * u], [cx - half * 0.7, foot - 0.42 * u]], paint)
        p.poly([[cx - half * 0.8, foot - 0.26 * u], [cx + half * 0.8, foot - 0.26 * u],
                [cx + half * 0.65, foot - 0.39 * u], [cx - half * 0.65, foot - 0.39 * u]], _GLASS)
        for side in (-1, 1):
            p.rect(cx + side * half * 0.92 - 0.05 * u, foot - 0.22 * u, cx + side * half * 0.92 + 0.05 * u,
                   foot - 0.17 * u, (200, 20, 20))
        p.rect(cx - 0.07 * u, foot - 0.14 * u, cx + 0.07 * u, foot - 0.1 * u, (235, 235, 235))
        return
    length = 0.95 * u * rng.uniform(0.9, 1.1)
    radius = 0.085 * u
    x0, x1 = cx - length / 2, cx + length / 2
    body_top, body_bottom = foot - 0.3 * u, foot - 0.45 * radius
    p.rect(x0, body_top, x1, body_bottom, paint, 0.06 * u)
    roof = body_top - 0.17 * u
    back, nose = (x0, x1) if f > 0 else (x1, x0)

    def along(frac):  # x at a fraction from the back to the nose
        return back + frac * (nose - back)

    p.poly([[along(0.05), body_top + 1], [along(0.15), roof], [along(0.6), roof], [along(0.75), body_top + 1]], paint)
    p.poly([[along(0.11), body_top], [along(0.18), roof + 0.025 * u], [along(0.38), roof + 0.025 * u],
            [along(0.38), body_top]], _GLASS)
    p.poly([[along(0.42), body_top], [along(0.42), roof + 0.025 * u], [along(0.58), roof + 0.025 * u],
            [along(0.7), body_top]], _GLASS)
    for frac in (0.18, 0.8):
        _wheel(p, (along(frac), foot - radius), radius)
    p.circle((along(0.98), body_top + 0.05 * u), 0.025 * u, (250, 240, 180))
    p.circle((along(0.02), body_top + 0.05 * u), 0.02 * u, (200, 20, 20))


def _draw_truck(p, rng, inst):
    """Side view: cab with a window + a tall cargo box, three wheels; or a rear box."""
    u, cx, foot, f = inst["unit"], inst["cx"], inst["foot_y"], inst["facing"]
    cab = _jitter(rng, rng.choice([[200, 40, 30], [30, 70, 170], [235, 235, 235], [240, 150, 30]]), 25)
    box = _jitter(rng, rng.choice([[225, 225, 220], [170, 170, 175], [120, 90, 60], [60, 110, 70]]), 20)
    radius = 0.1 * u
    if inst["view"] == "end":
        half = 0.3 * u * rng.uniform(0.9, 1.1)
        for side in (-1, 1):
            p.rect(cx + side * half * 0.85 - 0.06 * u, foot - 0.12 * u, cx + side * half * 0.85 + 0.06 * u, foot, _TYRE)
        p.rect(cx - half, foot - 0.72 * u, cx + half, foot - 0.1 * u, box, 0.01 * u)
        p.line((cx, foot - 0.7 * u), (cx, foot - 0.12 * u), max(1.0, 0.012 * u), box * 0.6)
        p.rect(cx - half, foot - 0.14 * u, cx + half, foot - 0.1 * u, (60, 60, 60))
        for side in (-1, 1):
            p.rect(cx + side * half * 0.85 - 0.03 * u, foot - 0.2 * u, cx + side * half * 0.85 + 0.03 * u,
                   foot - 0.16 * u, (210, 30, 20))
        return
    length = 1.3 * u * rng.uniform(0.9, 1.1)
    back, nose = (cx - length / 2, cx + length / 2) if f > 0 else (cx + length / 2, cx - length / 2)

    def along(frac):  # x at a fraction from the back to the nose
        return back + frac * (nose - back)

    def part(start, stop, top, bottom, colour, radius=0.0):  # a box spanning [start, stop] back-to-nose
        x0, x1 = sorted((along(start), along(stop)))
        p.rect(x0, top, x1, bottom, colour, radius)

    bottom = foot - 0.6 * radius
    part(0.0, 0.7, foot - 0.72 * u, bottom, box, 0.015 * u)  # cargo box
    part(0.73, 1.0, foot - 0.5 * u, bottom, cab, 0.04 * u)
    part(0.86, 0.98, foot - 0.46 * u, foot - 0.3 * u, _GLASS, 0.01 * u)  # windscreen
    part(0.68, 0.75, foot - 0.3 * u, bottom, (50, 50, 50))  # coupling
    for frac in (0.12, 0.25, 0.86):
        _wheel(p, (along(frac), foot - radius), radius)


def _draw_bus(p, rng, inst):
    """Side view: long box, a row of windows, doors, wheels; or a front view."""
    u, cx, foot, f = inst["unit"], inst["cx"], inst["foot_y"], inst["facing"]
    paint = _jitter(rng, rng.choice([[240, 200, 30], [200, 30, 30], [40, 90, 190], [235, 235, 235], [40, 150, 80]]), 20)
    if inst["view"] == "end":
        half = 0.31 * u * rng.uniform(0.95, 1.05)
        for side in (-1, 1):
            p.rect(cx + side * half * 0.8 - 0.06 * u, foot - 0.1 * u, cx + side * half * 0.8 + 0.06 * u, foot, _TYRE)
        p.rect(cx - half, foot - 0.75 * u, cx + half, foot - 0.06 * u, paint, 0.05 * u)
        p.rect(cx - half * 0.88, foot - 0.6 * u, cx + half * 0.88, foot - 0.3 * u, _GLASS, 0.02 * u)
        p.rect(cx - half * 0.6, foot - 0.72 * u, cx + half * 0.6, foot - 0.64 * u, (30, 30, 30))
        p.rect(cx - half * 0.5, foot - 0.71 * u, cx + half * 0.2, foot - 0.65 * u, (250, 160, 30))
        for side in (-1, 1):
            p.circle((cx + side * half * 0.75, foot - 0.17 * u), 0.035 * u, (250, 245, 200))
        return
    length = 1.7 * u * rng.uniform(0.92, 1.08)
    radius = 0.09 * u
    x0, x1 = cx - length / 2, cx + length / 2
    top, bottom = foot - 0.74 * u, foot - 0.5 * radius
    p.rect(x0, top, x1, bottom, paint, 0.05 * u)
    p.rect(x0, bottom - 0.12 * u, x1, bottom - 0.08 * u, paint * 0.6)  # skirt stripe
    num_windows = int(rng.integers(5, 8))
    pitch = (length - 0.12 * u) / num_windows
    for i in range(num_windows):
        wx = x0 + 0.06 * u + i * pitch
        p.rect(wx + 0.012 * u, top + 0.1 * u, wx + pitch - 0.012 * u, top + 0.34 * u, _GLASS, 0.01 * u)
    for frac in (0.2, 0.6):
        dx = x0 + (frac if f > 0 else 1 - frac) * length
        p.rect(dx - 0.06 * u, top + 0.38 * u, dx + 0.06 * u, bottom - 0.02 * u, np.multiply(_GLASS, 0.8))
    p.rect(x0 + 0.1 * u, top + 0.02 * u, x0 + 0.45 * u, top + 0.08 * u, (30, 30, 30))
    for frac in (0.15, 0.78):
        _wheel(p, (x0 + frac * length, foot - radius), radius)


_DRAW = (_draw_person, _draw_rider, _draw_car, _draw_truck, _draw_bus)
