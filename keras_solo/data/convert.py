"""Converters from Cityscapes polygons and YOLO segmentation labels to COCO.

Both write a COCO instances JSON (``images``, ``annotations``, ``categories``
with ids 1..K in the order of ``classes``) whose ``file_name`` entries are
relative to the dataset root, so load it with ``image_root`` = that root (the
converters return it as ``stats["image_root"]``). ``area`` and ``bbox`` are
computed by pycocotools from the rasterised segmentation.

Polygons of occluding objects overlap and are NOT trimmed: a pedestrian
behind a car keeps the pixels the car hides. (Cityscapes lists objects back to
front, so the visible masks could be recovered by painting in order; YOLO
labels have no depth order.)

JSON is written atomically (a temporary file, then ``os.replace``) and an
existing output is only replaced with ``overwrite=True``.
"""

import difflib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import yaml
from pycocotools import mask as mask_utils

from keras_solo.runtime.image import read_image
from keras_solo.config import PAPER_CLASSES
from keras_solo.errors import SoloError, where
from keras_solo.errors import write_json as atomic_write_json

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_MAX_ISSUES = 20  # issues kept in the returned stats


def write_json(path, obj, *, overwrite=False):
    """Writes ``obj`` as compact JSON to ``path`` atomically.

    Args:
        path: output file; parent folders are created.
        obj: a JSON-serialisable object.
        overwrite: replace an existing file. Defaults to False.

    Raises:
        SoloError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise SoloError(f"{path}: already exists (pass overwrite=True, or --overwrite, to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj, what="COCO JSON", indent=None, separators=(",", ":"))


def _check_output(out_json, overwrite):
    if Path(out_json).exists() and not overwrite:
        raise SoloError(f"{out_json}: already exists (pass overwrite=True, or --overwrite, to replace it)")


def _categories(classes):
    classes = tuple(classes)
    if not classes:
        raise SoloError("classes: at least one class name is needed")
    if len(set(classes)) != len(classes):
        raise SoloError(f"classes: duplicate names in {list(classes)}")
    return [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(classes)]


# ---------------------------------------------------------------------------
# Cityscapes


def convert_cityscapes(root, split, out_json, classes=PAPER_CLASSES, *, overwrite=False):
    """Converts Cityscapes ``gtFine`` polygons of one split to COCO.

    Reads ``root/gtFine/<split>/<city>/<stem>_gtFine_polygons.json`` (keys
    ``imgHeight``, ``imgWidth``, ``objects`` = ``[{label, polygon}]``). Objects
    whose label is in ``classes`` become annotations; group labels
    (``persongroup``, ``cargroup``, ... = a base class + ``"group"``) become
    ``iscrowd=1`` annotations of the base class, stored as RLE. Polygons with
    fewer than 3 points, or that rasterise to no pixel, are skipped and
    counted; objects marked ``deleted`` are ignored. Overlapping polygons are
    not trimmed (see the module doc).

    Args:
        root: Cityscapes root holding ``gtFine/`` (and ``leftImg8bit/``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        out_json: output COCO JSON path.
        classes: class names to keep; COCO ids 1..K in this order. Defaults
            to the paper's person, rider, car, truck, bus.
        overwrite: replace an existing ``out_json``. Defaults to False.

    Returns:
        Stats dict: ``images``, ``annotations``, ``crowd``, ``per_class``
        ``{name: non-crowd count}``, ``crowd_per_class``, ``skipped_short``,
        ``skipped_empty``, ``out_json`` and ``image_root`` (= ``root``;
        ``file_name`` is ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png``).

    Raises:
        SoloError: missing root or split folder, no polygon files, a
            malformed polygon file (named), or an existing ``out_json``.
    """
    root = Path(root)
    categories = _categories(classes)
    cat_ids = {c["name"]: c["id"] for c in categories}
    _check_output(out_json, overwrite)
    if not root.is_dir():
        raise SoloError(f"{root}: Cityscapes root not found")
    split_dir = root / "gtFine" / split
    if not split_dir.is_dir():
        raise SoloError(f"{split_dir}: split folder not found (expected <root>/gtFine/{split}/<city>/)")
    files = sorted(split_dir.glob("*/*_gtFine_polygons.json"))
    if not files:
        raise SoloError(f"{split_dir}: no *_gtFine_polygons.json files found")

    stats = {
        "images": 0,
        "annotations": 0,
        "crowd": 0,
        "per_class": {name: 0 for name in cat_ids},
        "crowd_per_class": {name: 0 for name in cat_ids},
        "skipped_short": 0,
        "skipped_empty": 0,
    }
    images, annotations = [], []
    for image_id, path in enumerate(files, start=1):
        height, width, objects = _read_cityscapes(path)
        stem = path.name[: -len("_gtFine_polygons.json")]
        file_name = f"leftImg8bit/{split}/{path.parent.name}/{stem}_leftImg8bit.png"
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        stats["images"] += 1
        for index, obj in enumerate(objects):
            label = obj["label"]
            if obj.get("deleted"):
                continue
            if label in cat_ids:
                name, crowd = label, 0
            elif label.endswith("group") and label[: -len("group")] in cat_ids:
                name, crowd = label[: -len("group")], 1
            else:
                continue
            points = obj["polygon"]
            if len(points) < 3:
                stats["skipped_short"] += 1
                continue
            try:
                flat = [float(v) for point in points for v in point]
            except (TypeError, ValueError):
                raise SoloError(where(path, f"object {index}", "polygon points must be [x, y] numbers")) from None
            if len(flat) != 2 * len(points):
                raise SoloError(where(path, f"object {index}", "polygon points must be [x, y] pairs"))
            rle = mask_utils.frPyObjects([flat], height, width)[0]
            area = int(mask_utils.area(rle))
            if area == 0:
                stats["skipped_empty"] += 1
                continue
            if crowd:
                segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
                stats["crowd"] += 1
                stats["crowd_per_class"][name] += 1
            else:
                segmentation = [flat]
                stats["per_class"][name] += 1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat_ids[name],
                    "segmentation": segmentation,
                    "area": area,
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": crowd,
                }
            )
    stats["annotations"] = len(annotations)
    return _finish(out_json, f"Cityscapes gtFine {split} converted by keras_solo", images, annotations,
                   categories, stats, image_root=root, overwrite=overwrite)


def _read_cityscapes(path):
    """Reads and checks one polygon file. Returns (height, width, objects)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SoloError(where(path, f"cannot read polygon JSON ({error})")) from None
    if not isinstance(data, dict):
        raise SoloError(where(path, "expected a JSON object with imgHeight, imgWidth, objects"))
    for key in ("imgHeight", "imgWidth", "objects"):
        if key not in data:
            raise SoloError(where(path, f"missing key {key!r}"))
    height, width, objects = data["imgHeight"], data["imgWidth"], data["objects"]
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise SoloError(where(path, f"imgHeight/imgWidth must be positive integers, got {height!r}/{width!r}"))
    if not isinstance(objects, list):
        raise SoloError(where(path, "'objects' must be a list"))
    for index, obj in enumerate(objects):
        if not (isinstance(obj, dict) and isinstance(obj.get("label"), str) and isinstance(obj.get("polygon"), list)):
            raise SoloError(where(path, f"object {index}", "expected {label: str, polygon: [[x, y], ...]}"))
    return height, width, objects


# ---------------------------------------------------------------------------
# YOLO segmentation


def convert_yolo(data_yaml, split, out_json, classes=None, *, crowd_groups=False, strict=False, overwrite=False):
    """Converts YOLO segmentation labels of one split to COCO.

    ``data_yaml`` holds ``names`` (a list, or a dict ``{index: name}``), an
    optional ``nc`` and ``path`` (the dataset root; relative to the YAML's
    folder; defaults to that folder), and the split entry (e.g.
    ``train: train/images``): a folder of images, a ``.txt`` list of image
    paths, or a list of those, relative to the root. Each image's labels are at
    the same path with the last ``images`` folder replaced by ``labels`` and the
    extension by ``.txt``; a missing label file means a negative image.

    A label line is ``cls x1 y1 x2 y2 ...`` (a normalised polygon) or
    ``cls cx cy w h`` (a normalised box, converted to a rectangle polygon).
    Image sizes are read from the images as stored (EXIF orientation is not
    applied, matching the loader in ``keras_solo.data.coco``). Occluding objects' polygons overlap
    and are NOT trimmed (YOLO labels carry no depth order).

    Malformed lines (non-numeric values, a non-integer or out-of-range class
    index, an odd coordinate count, fewer than 3 points, coordinates outside
    0..1) are skipped, counted and reported in one warning, or raise with
    ``strict=True``. Polygons that rasterise to no pixel are skipped and
    counted as ``skipped_empty``.

    With ``crowd_groups=True`` a class named ``<kept class>group`` (e.g.
    ``persongroup``, as in Cityscapes exports) becomes ``iscrowd=1``
    annotations (RLE) of the kept class instead of being dropped, so training
    ignores those regions rather than treating them as background.

    Args:
        data_yaml: path of the YOLO ``data.yaml``.
        split: split key in the YAML (``"train"``, ``"val"``, ``"test"``).
        out_json: output COCO JSON path.
        classes: names to keep, in COCO id order 1..K; other classes are
            dropped and counted. Defaults to all ``names`` in index order.
        crowd_groups: map ``<class>group`` classes to crowd annotations of
            ``<class>``. Defaults to False.
        strict: raise on the first malformed line instead of skipping it.
            Defaults to False.
        overwrite: replace an existing ``out_json``. Defaults to False.

    Returns:
        Stats dict: ``images``, ``annotations``, ``crowd``, ``negatives``
        (images without a non-crowd annotation), ``missing_labels`` (images without
        a label file), ``per_class`` (non-crowd), ``crowd_per_class``,
        ``dropped_classes`` ``{name: count}``, ``malformed``
        ``{reason: count}``, ``skipped_empty``, ``issues`` (the first few
        ``"file:line: reason"``), ``out_json`` and ``image_root`` (the dataset
        root; ``file_name`` is relative to it).

    Raises:
        SoloError: unreadable YAML or image, unknown split or class name, no
            images, an existing ``out_json``, or (``strict``) a malformed line,
            naming the file and line number.
    """
    data_yaml = Path(data_yaml)
    names, base, entries = _read_data_yaml(data_yaml, split)
    classes = tuple(names[i] for i in sorted(names)) if classes is None else tuple(classes)
    categories = _categories(classes)
    index_of = {name: i for i, name in names.items()}
    for name in classes:
        if name not in index_of:
            close = difflib.get_close_matches(str(name), list(index_of), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SoloError(where(data_yaml, f"class {name!r} not in names {list(index_of)}{hint}"))
    # YOLO class index -> (COCO category id, iscrowd)
    cat_of_index = {index_of[c["name"]]: (c["id"], 0) for c in categories}
    if crowd_groups:
        for c in categories:
            group = index_of.get(f"{c['name']}group")
            if group is not None and group not in cat_of_index:
                cat_of_index[group] = (c["id"], 1)
    _check_output(out_json, overwrite)

    image_paths = _list_images(data_yaml, base, entries)
    stats = {
        "images": 0,
        "annotations": 0,
        "crowd": 0,
        "negatives": 0,
        "missing_labels": 0,
        "per_class": {name: 0 for name in classes},
        "crowd_per_class": {name: 0 for name in classes},
        "dropped_classes": {},
        "malformed": {},
        "skipped_empty": 0,
        "issues": [],
    }
    images, annotations = [], []
    for image_id, image_path in enumerate(image_paths, start=1):
        height, width = read_image(image_path).shape[:2]  # as stored: the package's one reader
        try:
            file_name = image_path.relative_to(base).as_posix()
        except ValueError:
            file_name = Path(os.path.relpath(image_path, base)).as_posix()
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        stats["images"] += 1
        label_path = _label_path(image_path)
        if not label_path.is_file():
            stats["missing_labels"] += 1
            stats["negatives"] += 1
            continue
        kept = 0
        for lineno, cls, polygon in _parse_label_file(label_path, names, width, height, strict, stats):
            if cls not in cat_of_index:
                name = names[cls]
                stats["dropped_classes"][name] = stats["dropped_classes"].get(name, 0) + 1
                continue
            rle = mask_utils.frPyObjects([polygon], height, width)[0]
            area = int(mask_utils.area(rle))
            if area == 0:
                stats["skipped_empty"] += 1
                continue
            category_id, crowd = cat_of_index[cls]
            name = classes[category_id - 1]
            if crowd:
                segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
                stats["crowd"] += 1
                stats["crowd_per_class"][name] += 1
            else:
                segmentation = [polygon]
                stats["per_class"][name] += 1
                kept += 1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": segmentation,
                    "area": area,
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": crowd,
                }
            )
        stats["negatives"] += kept == 0
    stats["annotations"] = len(annotations)

    skipped = sum(stats["malformed"].values())
    if skipped:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(stats["malformed"].items()))
        warnings.warn(
            f"{data_yaml}: {split}: skipped {skipped} malformed label lines ({reasons}); "
            f"first: {stats['issues'][0]}",
            stacklevel=2,
        )
    return _finish(out_json, f"YOLO {data_yaml.name} {split} converted by keras_solo", images, annotations,
                   categories, stats, image_root=base, overwrite=overwrite)


def _read_data_yaml(data_yaml, split):
    """Returns ({index: name}, dataset root, [split entries])."""
    try:
        with open(data_yaml) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise SoloError(f"{data_yaml}: file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SoloError(where(data_yaml, f"cannot read YAML ({error})")) from None
    if not isinstance(data, dict):
        raise SoloError(where(data_yaml, "expected a mapping with 'names' and split paths"))
    raw = data.get("names")
    if isinstance(raw, list):
        names = dict(enumerate(raw))
    elif isinstance(raw, dict):
        try:
            names = {int(k): v for k, v in raw.items()}
        except (TypeError, ValueError):
            raise SoloError(where(data_yaml, "'names' keys must be class indices")) from None
    else:
        raise SoloError(where(data_yaml, "'names' must be a list or a {index: name} mapping"))
    names = {i: str(v) for i, v in names.items()}
    if len(set(names.values())) != len(names):
        raise SoloError(where(data_yaml, "'names' has duplicate class names"))
    if "nc" in data and data["nc"] != len(names):
        raise SoloError(where(data_yaml, f"nc = {data['nc']} but 'names' has {len(names)} entries"))
    base = data_yaml.parent
    if data.get("path"):
        base = base / str(data["path"])
    if split not in data or not data[split]:
        splits = [k for k in data if k not in ("names", "nc", "path", "download")]
        raise SoloError(where(data_yaml, f"no {split!r} entry (found {splits})"))
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    return names, base, [str(e) for e in entries]


def _list_images(data_yaml, base, entries):
    paths = []
    for entry in entries:
        location = base / entry
        if location.is_dir():
            paths += sorted(p for p in location.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif location.is_file() and location.suffix == ".txt":
            for line in location.read_text().splitlines():
                if line.strip():
                    paths.append(location.parent / line.strip())
        else:
            raise SoloError(where(data_yaml, f"split path {location} not found"))
    if not paths:
        raise SoloError(where(data_yaml, f"no images found under {[str(base / e) for e in entries]}"))
    return paths


def _label_path(image_path):
    """``.../images/x/a.jpg`` -> ``.../labels/x/a.txt`` (the last ``images``)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    text = str(image_path)
    if sa in text:
        text = sb.join(text.rsplit(sa, 1))
    return Path(text).with_suffix(".txt")


def _parse_label_file(label_path, names, width, height, strict, stats):
    """Yields (line number, class index, flat pixel polygon) of good lines."""
    try:
        lines = label_path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SoloError(f"{label_path}: cannot read label file ({error})") from None
    for lineno, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        result = _parse_label_line(tokens, names)
        if isinstance(result, str):
            if strict:
                raise SoloError(where(label_path, f"line {lineno}", result))
            stats["malformed"][result] = stats["malformed"].get(result, 0) + 1
            if len(stats["issues"]) < _MAX_ISSUES:
                stats["issues"].append(f"{label_path}:{lineno}: {result}")
            continue
        cls, coords = result
        if len(coords) == 4:  # cx cy w h box -> rectangle
            cx, cy, bw, bh = coords
            x0, y0, x1, y1 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
            coords = np.array([x0, y0, x1, y0, x1, y1, x0, y1])
        coords = np.clip(coords, 0.0, 1.0) * np.tile([width, height], len(coords) // 2)
        yield lineno, cls, [round(float(v), 2) for v in coords]


def _parse_label_line(tokens, names):
    """Returns (class index, normalised coords array) or a reason string."""
    try:
        values = np.array([float(t) for t in tokens])
    except ValueError:
        return "non-numeric value"
    if not np.isfinite(values).all():
        return "non-numeric value"
    cls = values[0]
    if cls != int(cls) or int(cls) not in names:
        return "class index out of range"
    coords = values[1:]
    if len(coords) != 4:
        if len(coords) % 2:
            return "odd coordinate count"
        if len(coords) < 6:
            return "fewer than 3 points"
    if (coords < -0.01).any() or (coords > 1.01).any():
        return "coordinate outside 0..1"
    return int(cls), coords


def _finish(out_json, description, images, annotations, categories, stats, *, image_root, overwrite):
    """Writes the COCO file (atomically) and completes the converter's stats."""
    dataset = {
        "info": {"description": description},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    write_json(out_json, dataset, overwrite=overwrite)
    stats["out_json"] = str(out_json)
    stats["image_root"] = str(image_root)
    return stats


def format_summary(out_json, stats):
    """A converter's stats as a few lines: images, instances per class (crowd
    regions beside), what was skipped or dropped, the first issues."""
    per_class = ", ".join(f"{name} {count}" + (f" (+{stats['crowd_per_class'][name]} crowd)"
                                               if stats["crowd_per_class"].get(name) else "")
                          for name, count in stats["per_class"].items())
    lines = [f"wrote {out_json}: {stats['images']} images, {stats['annotations']} instances"
             + (f" ({stats['crowd']} crowd)" if stats["crowd"] else ""),
             f"  per class: {per_class}"]
    skipped = {key: stats.get(key, 0) for key in ("negatives", "missing_labels", "skipped_empty", "skipped_short")}
    if any(skipped.values()):
        lines.append("  " + ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in skipped.items() if value))
    for key in ("dropped_classes", "malformed"):
        if stats.get(key):
            lines.append(f"  {key.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in stats[key].items()))
    for issue in stats.get("issues", [])[:3]:
        lines.append(f"  issue: {issue}")
    return "\n".join(lines)
