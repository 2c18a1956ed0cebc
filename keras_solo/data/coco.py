"""COCO instances JSON -> validated records -> decoded image + instance masks.

Pure Python + numpy + pycocotools + OpenCV; no TensorFlow, so converters and
evaluation can use it without loading a deep-learning framework.

:func:`load_coco` reads and validates a COCO "instances" file once, up front,
and turns it into plain dataclasses (:class:`CocoDataset`, :class:`ImageRecord`,
:class:`AnnRecord`). Every problem caused by the file raises
:class:`keras_solo.errors.SoloError` with one line naming the file (and the
image / annotation id) and the problem, so a bad dataset fails at start-up and
not an hour into training. :func:`decode_instances` then reads one image and
rasterises its annotations with pycocotools (polygons and RLE, compressed and
uncompressed), exactly as ``COCO.annToMask`` does.

Category ids are mapped to contiguous labels ``0..C-1`` in increasing id
order (``CocoDataset.cat_ids[label]`` gives the COCO id back); ``class_names``
selects and orders a subset of the categories by name instead.

Lenient where the data is merely imperfect, counted in ``CocoDataset.stats``:

- a polygon with fewer than 3 points, an odd number of coordinates or
  non-finite coordinates is skipped (one ``warnings.warn`` with the count;
  ``strict=True`` makes it an error); an annotation left with no polygon (or
  with no segmentation at all) is dropped;
- polygon vertices and boxes outside the image are clipped to it (a polygon
  is clipped exactly against the image rectangle, so the mask inside the image
  is unchanged);
- images with zero annotations are kept as negatives.

Overlapping instances are not resolved. Occluding objects whose polygons
overlap (as in Cityscapes exports converted to YOLO / COCO polygons) are not
trimmed against each other: each instance keeps its full polygon, so a pixel
may belong to two masks, and the target assignment uses each mask as-is.

Images are read as stored: OpenCV's EXIF auto-rotation is turned off, as in
pycocotools / PIL, so the pixels match the ``width`` / ``height`` written in the
JSON (a mismatch is an error naming the file and image id).
"""

import dataclasses
import difflib
import json
import math
import ntpath
import os
import posixpath
import sys
import warnings

import numpy as np
from pycocotools import mask as mask_utils

from keras_solo.errors import SoloError, where
from keras_solo.runtime.image import decode_image, read_image

__all__ = [
    "AnnRecord",
    "CocoDataset",
    "ImageRecord",
    "ann_to_mask",
    "check_image_files",
    "decode_instances",
    "load_coco",
]

_REQUIRED_KEYS = ("images", "annotations", "categories")
_MAX_SIDE = 1 << 20  # OpenCV reads no image wider or taller (CV_IO_MAX_IMAGE_WIDTH)


@dataclasses.dataclass(frozen=True)
class AnnRecord:
    """One validated annotation.

    Attributes:
        ann_id: the COCO annotation id (its position in the list if absent).
        label: contiguous class label, ``0..C-1``.
        category_id: the COCO category id.
        segmentation: polygons ``[[x0, y0, x1, y1, ...], ...]`` (valid ones
            only, clipped to the image) or an RLE dict ``{"size": [h, w],
            "counts": str | list[int]}``.
        bbox: ``(x, y, w, h)`` clipped to the image, or ``None`` if absent.
        iscrowd: crowd region (goes into the ignore map, never a positive).
        area: the ``area`` field of the JSON, or ``None`` if absent.
    """

    ann_id: int
    label: int
    category_id: int
    segmentation: object
    bbox: tuple | None
    iscrowd: bool
    area: float | None


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image and its annotations.

    Attributes:
        image_id: the COCO image id.
        file_name: ``file_name`` as written in the JSON (relative).
        path: the image file, ``image_root / file_name``.
        width: width in pixels, from the JSON.
        height: height in pixels, from the JSON.
        annotations: the kept annotations (possibly none: a negative image).
    """

    image_id: int
    file_name: str
    path: str
    width: int
    height: int
    annotations: list


@dataclasses.dataclass(frozen=True)
class CocoDataset:
    """A validated COCO instances file.

    Attributes:
        json_path: the JSON file.
        image_root: folder that ``file_name`` entries are relative to.
        records: one :class:`ImageRecord` per image, in JSON order.
        class_names: class name per contiguous label.
        cat_ids: COCO category id per contiguous label.
        stats: counts: ``images``, ``negatives`` (images without annotations),
            ``annotations`` (kept), ``crowd``, ``skipped_polygons``,
            ``dropped_annotations`` (no usable segmentation), ``clipped``
            (annotations whose polygon or box was clipped to the image),
            ``other_category`` (dropped by ``class_names``).
    """

    json_path: str
    image_root: str
    records: list = dataclasses.field(repr=False)
    class_names: tuple
    cat_ids: tuple
    stats: dict

    @property
    def num_classes(self):
        """Number of classes ``C``."""
        return len(self.class_names)

    def __len__(self):
        return len(self.records)


def load_coco(json_path, image_root=None, *, strict=False, class_names=None):
    """Reads and validates a COCO instances JSON file.

    Args:
        json_path: the COCO JSON file.
        image_root: folder that image ``file_name`` entries are relative to.
            Defaults to the JSON file's folder.
        strict: raise on invalid polygons (and annotations without a
            segmentation) instead of skipping them with a warning. Defaults to
            False.
        class_names: optional sequence of category names; selects those
            categories and orders the labels as given. Annotations of other
            categories are dropped (counted in ``stats["other_category"]``).
            Defaults to None (all categories, ordered by id).

    Returns:
        A :class:`CocoDataset`.

    Raises:
        SoloError: the file is missing or not valid JSON; required keys are
            missing or of the wrong type; an annotation points at an unknown
            image or category; duplicate image / category ids; an image
            ``file_name`` escapes ``image_root``; an RLE does not fit its
            image; an unknown name in ``class_names``; no images; or (with
            ``strict``) an invalid polygon.
    """
    json_path = os.fspath(json_path)
    data = _read_json(json_path)
    image_root = os.path.dirname(os.path.abspath(json_path)) if image_root is None else os.fspath(image_root)

    images = _parse_images(json_path, image_root, data["images"])
    all_cats = _parse_categories(json_path, data["categories"])
    cat_ids, names = _select_classes(json_path, all_cats, class_names)
    label_of = {cat_id: label for label, cat_id in enumerate(cat_ids)}

    stats = dict.fromkeys(
        (
            "images",
            "negatives",
            "annotations",
            "crowd",
            "skipped_polygons",
            "dropped_annotations",
            "clipped",
            "other_category",
        ),
        0,
    )
    skipped = _SkipLog(json_path, strict)
    anns_by_image = {image_id: [] for image_id in images}
    for index, ann in enumerate(data["annotations"]):
        parsed = _parse_annotation(json_path, index, ann, images, all_cats, label_of, stats, skipped)
        if parsed is not None:
            image_id, record = parsed
            anns_by_image[image_id].append(record)
    skipped.warn()
    if stats["other_category"]:
        unknown = sorted(name for cat_id, name in all_cats.items() if cat_id not in label_of)
        warnings.warn(f"{json_path}: dropped {stats['other_category']} annotation(s) of categories the model "
                      f"does not know ({', '.join(unknown)[:200]})", stacklevel=2)
    stats["skipped_polygons"] = skipped.polygons
    stats["dropped_annotations"] = skipped.annotations

    records = []
    for image_id, (file_name, path, width, height) in images.items():
        anns = anns_by_image[image_id]
        records.append(ImageRecord(image_id, file_name, path, width, height, anns))
        stats["negatives"] += not anns
    stats["images"] = len(records)
    return CocoDataset(
        json_path=json_path,
        image_root=image_root,
        records=records,
        class_names=tuple(names),
        cat_ids=tuple(cat_ids),
        stats=stats,
    )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Signatures of other formats OpenCV reads; their size is not checked here.
_OTHER_SIGNATURES = (
    b"BM",  # BMP
    b"RIFF",  # WebP
    b"II*\x00",  # TIFF little-endian
    b"MM\x00*",  # TIFF big-endian
    b"\x00\x00\x00\x0cjP  ",  # JPEG 2000
    b"GIF8",
    b"v/1\x01",  # OpenEXR
    b"#?RADIANCE",
    b"#?RGBE",
)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_TAIL_BYTES = 1024


def check_image_files(dataset):
    """Checks every image file of a dataset up front, cheaply (no decoding).

    Reads the first and the last bytes of each file, so a bad file fails
    before training starts instead of inside the ``tf.data`` pipeline hours
    later. Checked: the file exists and is not empty; PNG and JPEG: the
    signature, the stored size against the JSON's ``width`` / ``height``, and
    the end marker (PNG ``IEND`` chunk, JPEG end-of-image) that a truncated
    copy lacks; BMP / WebP / TIFF / JPEG 2000 / GIF / EXR / HDR: the
    signature only; any other file is decoded once with OpenCV. Pixel data
    damaged in the middle of a complete file is found only when the pipeline
    decodes it (:func:`read_image`).

    Args:
        dataset: a :class:`CocoDataset`.

    Raises:
        SoloError: naming the JSON file, image id and image file of the first
            bad file, and how many other files are bad.
    """
    problems = []
    for record in dataset.records:
        problem = _image_file_problem(record)
        if problem:
            problems.append(where(dataset.json_path, f"image {record.image_id}", f"{record.path}: {problem}"))
    if problems:
        more = f"; {len(problems) - 1} more bad image file(s)" if len(problems) > 1 else ""
        raise SoloError(problems[0] + more)


def _image_file_problem(record):
    """What is wrong with one image file (a short phrase), or None."""
    try:
        with open(record.path, "rb") as stream:
            head = stream.read(64)
            size = os.fstat(stream.fileno()).st_size
            if not size:
                return "empty file"
            if head.startswith(_PNG_SIGNATURE):
                stored = _png_size(head)
                stream.seek(max(0, size - _TAIL_BYTES))
                if b"IEND" not in stream.read():
                    return "truncated PNG (no IEND chunk at the end)"
                kind = "PNG"
            elif head.startswith(b"\xff\xd8\xff"):
                stored = _jpeg_size(stream)
                stream.seek(max(0, size - _TAIL_BYTES))
                if b"\xff\xd9" not in stream.read():
                    return "truncated JPEG (no end-of-image marker at the end)"
                kind = "JPEG"
            elif head.startswith(_OTHER_SIGNATURES):
                return None
            else:
                stream.seek(0)
                data = np.frombuffer(stream.read(), np.uint8)
                if decode_image(data) is None:
                    return "not a readable image (unknown format)"
                return None
    except FileNotFoundError:
        return "image file not found"
    except OSError as error:
        return f"cannot read image file ({error.strerror or error})"
    if stored is None:
        return f"not a readable {kind} (no size in its header)"
    width, height = stored
    if (width, height) != (record.width, record.height):
        hint = " (rotated? EXIF orientation is not applied)" if (width, height) == (record.height, record.width) else ""
        return (f"stored as {width}x{height} but the JSON says {record.width}x{record.height} "
                f"(width x height){hint}")
    return None


def _png_size(head):
    """(width, height) from a PNG's IHDR chunk, or None."""
    if len(head) < 24 or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _jpeg_size(stream):
    """(width, height) from a JPEG's start-of-frame segment, or None."""
    stream.seek(2)
    for _ in range(10000):
        byte = stream.read(1)
        if byte != b"\xff":
            return None
        while byte == b"\xff":  # a marker, after optional fill bytes
            byte = stream.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan: no frame header before it
            return None
        length = stream.read(2)
        if len(length) < 2:
            return None
        length = int.from_bytes(length, "big")
        if marker in _JPEG_SOF:
            frame = stream.read(5)
            if len(frame) < 5:
                return None
            return int.from_bytes(frame[3:5], "big"), int.from_bytes(frame[1:3], "big")
        if length < 2:
            return None
        stream.seek(length - 2, os.SEEK_CUR)
    return None


def decode_instances(dataset, record):
    """Reads one image and rasterises its annotations.

    Masks are rasterised with pycocotools exactly as ``COCO.annToMask``:
    polygons via ``frPyObjects`` + ``merge``, uncompressed RLE via
    ``frPyObjects``, compressed RLE as is, then ``decode``. Annotations whose
    mask is empty (e.g. a sliver polygon) are left out.

    Args:
        dataset: the :class:`CocoDataset` the record belongs to.
        record: an :class:`ImageRecord`.

    Returns:
        A dict with
        ``image``: uint8 (h, w, 3) RGB;
        ``masks``: uint8 (N, h, w), 0/1;
        ``labels``: int32 (N,), contiguous labels;
        ``boxes``: float32 (N, 4), ``x1, y1, x2, y2`` of each mask's extent in
        pixel-edge coordinates (``x2 = last column + 1``);
        ``iscrowd``: bool (N,);
        ``ann_ids``: int64 (N,).

    Raises:
        SoloError: the image cannot be read or its size differs from the JSON.
    """
    context = where(dataset.json_path, f"image {record.image_id}")
    image = read_image(record.path, context=context)
    height, width = image.shape[:2]
    if (height, width) != (record.height, record.width):
        hint = ""
        if (height, width) == (record.width, record.height):
            hint = " (rotated? EXIF orientation is not applied)"
        raise SoloError(
            where(
                context,
                f"{record.path} decodes to {width}x{height} but the JSON says "
                f"{record.width}x{record.height} (width x height){hint}",
            )
        )
    # One pycocotools decode for all instances: (h, w, N) in Fortran order is
    # (N, w, h) in C order, so the masks come back as transposed views with
    # no copy (letterbox resizes them in that layout); areas and boxes come
    # from the run-length codes, not from full-size passes over the masks.
    rles = [ann_to_rle(ann.segmentation, height, width) for ann in record.annotations]
    keep = np.flatnonzero(mask_utils.area(rles) > 0) if rles else np.zeros(0, np.int64)
    rles = [rles[k] for k in keep]
    kept = [record.annotations[k] for k in keep]
    if rles:
        masks = mask_utils.decode(rles).transpose(2, 1, 0).transpose(0, 2, 1)
        boxes = mask_utils.toBbox(rles).astype(np.float32)
        boxes[:, 2:] += boxes[:, :2]  # x, y, w, h -> x1, y1, x2, y2 (pixel edges)
    else:
        masks = np.zeros((0, height, width), np.uint8)
        boxes = np.zeros((0, 4), np.float32)
    labels = [ann.label for ann in kept]
    iscrowd = [ann.iscrowd for ann in kept]
    ann_ids = [ann.ann_id for ann in kept]
    return {
        "image": image,
        "masks": masks,
        "labels": np.asarray(labels, np.int32),
        "boxes": boxes,
        "iscrowd": np.asarray(iscrowd, bool),
        "ann_ids": np.asarray(ann_ids, np.int64),
    }


def ann_to_rle(segmentation, height, width):
    """A COCO segmentation as one compressed RLE (pycocotools).

    Args:
        segmentation: polygons (list of flat coordinate lists) or an RLE dict
            (``counts`` a string or a list of run lengths).
        height: image height.
        width: image width.
    """
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    rle = dict(segmentation)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle


def ann_to_mask(segmentation, height, width):
    """Rasterises a COCO segmentation (as :func:`ann_to_rle`) to a uint8
    (height, width) mask of 0/1."""
    return np.ascontiguousarray(mask_utils.decode(ann_to_rle(segmentation, height, width)), dtype=np.uint8)


# ---------------------------------------------------------------------------
# JSON validation

LARGE_JSON_BYTES = 50_000_000  # from this size a progress line is printed before reading


def _read_json(json_path):
    if not os.path.exists(json_path):
        raise SoloError(where(json_path, "file not found"))
    if os.path.isdir(json_path):
        raise SoloError(where(json_path, "is a folder, expected a COCO JSON file"))
    size = os.path.getsize(json_path)
    if size >= LARGE_JSON_BYTES:  # json.load says nothing for a while (about 40 s for 222 MB)
        print(f"reading {json_path} ({size / 1e6:.0f} MB) ...", file=sys.stderr, flush=True)
    try:
        with open(json_path, encoding="utf-8") as stream:
            data = json.load(stream)
    except json.JSONDecodeError as error:
        raise SoloError(
            where(json_path, f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno}; truncated?)")
        ) from None
    except UnicodeDecodeError:
        raise SoloError(where(json_path, "not valid JSON (not UTF-8 text)")) from None
    except RecursionError:
        raise SoloError(where(json_path, "not a COCO file (JSON nested too deeply)")) from None
    except OSError as error:
        raise SoloError(where(json_path, f"cannot read ({error.strerror or error})")) from None
    if not isinstance(data, dict):
        raise SoloError(
            where(json_path, f"expected a JSON object with {_REQUIRED_KEYS}, got a {type(data).__name__}")
        )
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise SoloError(
            where(json_path, f"missing {', '.join(map(repr, missing))}; a COCO instances file needs {_REQUIRED_KEYS}")
        )
    for key in _REQUIRED_KEYS:
        if not isinstance(data[key], list):
            raise SoloError(where(json_path, f"'{key}' must be a list, got {type(data[key]).__name__}"))
    return data


def _as_int(value, what, context, *, minimum=None, maximum=None):
    """Returns ``value`` as an int if it is an integral number, else raises."""
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise SoloError(where(context, f"'{what}' must be an integer, got {_short(value)}"))
    value = int(value)
    if minimum is not None and value < minimum:
        raise SoloError(where(context, f"'{what}' must be >= {minimum}, got {_short(value)}"))
    if maximum is not None and value > maximum:
        raise SoloError(where(context, f"'{what}' must be <= {maximum}, got {_short(value)}"))
    return value


def _as_number(value, what, context):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SoloError(where(context, f"'{what}' must be a number, got {_short(value)}"))
    try:
        return float(value)
    except OverflowError:  # an integer literal beyond float range
        raise SoloError(where(context, f"'{what}' is out of range, got {_short(value)}")) from None


def _check_entry(entry, kind, index, json_path, required):
    if not isinstance(entry, dict):
        raise SoloError(where(json_path, f"{kind}[{index}]", f"must be an object, got {type(entry).__name__}"))
    for key in required:
        if key not in entry:
            singular = {"images": "image", "annotations": "annotation", "categories": "category"}[kind]
            label = f"{kind}[{index}]" if "id" not in entry else f"{singular} {entry['id']}"
            raise SoloError(where(json_path, label, f"missing '{key}'"))


def _parse_images(json_path, image_root, entries):
    """Returns ``{image_id: (file_name, path, width, height)}`` in JSON order."""
    if not entries:
        raise SoloError(where(json_path, "no images: 'images' is empty"))
    images = {}
    by_path = {}
    for index, entry in enumerate(entries):
        _check_entry(entry, "images", index, json_path, ("id", "file_name", "width", "height"))
        image_id = _as_int(entry["id"], "id", where(json_path, f"images[{index}]"))
        context = where(json_path, f"image {image_id}")
        if image_id in images:
            raise SoloError(where(context, f"duplicate image id (images[{index}])"))
        file_name = entry["file_name"]
        if not isinstance(file_name, str) or not file_name:
            raise SoloError(where(context, f"'file_name' must be a non-empty string, got {file_name!r}"))
        path = _safe_join(image_root, file_name, context)
        key = os.path.normcase(os.path.normpath(path))
        if key in by_path:  # one image under two ids is trained and scored twice
            raise SoloError(where(context, f"file_name {file_name!r} is also image {by_path[key]}: "
                                           "an image may be listed once"))
        by_path[key] = image_id
        width = _as_int(entry["width"], "width", context, minimum=1, maximum=_MAX_SIDE)
        height = _as_int(entry["height"], "height", context, minimum=1, maximum=_MAX_SIDE)
        images[image_id] = (file_name, path, width, height)
    return images


def _safe_join(image_root, file_name, context):
    """Joins ``image_root / file_name``, refusing names that leave the root."""
    if "\0" in file_name:
        raise SoloError(where(context, f"file_name {_short(file_name)} contains a NUL character"))
    for flavour in (posixpath, ntpath):
        normal = flavour.normpath(file_name)
        parts = normal.replace("\\", "/").split("/")
        if flavour.isabs(file_name) or ntpath.splitdrive(file_name)[0] or parts[0] == "..":
            raise SoloError(
                where(context, f"file_name {file_name!r} escapes the image root {image_root} (absolute or '..' path)")
            )
    return os.path.join(image_root, *posixpath.normpath(file_name.replace("\\", "/")).split("/"))


def _parse_categories(json_path, entries):
    """Returns ``{category_id: name}`` sorted by id."""
    cats = {}
    for index, entry in enumerate(entries):
        _check_entry(entry, "categories", index, json_path, ("id", "name"))
        cat_id = _as_int(entry["id"], "id", where(json_path, f"categories[{index}]"))
        context = where(json_path, f"category {cat_id}")
        if cat_id in cats:
            raise SoloError(where(context, f"duplicate category id (categories[{index}])"))
        if not isinstance(entry["name"], str):
            raise SoloError(where(context, f"'name' must be a string, got {entry['name']!r}"))
        cats[cat_id] = entry["name"]
    if not cats:
        raise SoloError(where(json_path, "no categories: 'categories' is empty"))
    return dict(sorted(cats.items()))


def _select_classes(json_path, cats, class_names):
    """Returns (cat_ids, names) per contiguous label."""
    if class_names is None:
        return list(cats), list(cats.values())
    if isinstance(class_names, str):
        class_names = [class_names]
    class_names = list(class_names)
    if not class_names:
        raise SoloError(where(json_path, "class_names is empty"))
    id_of = {}
    for cat_id, name in cats.items():
        id_of.setdefault(name, []).append(cat_id)
    cat_ids = []
    for name in class_names:
        if class_names.count(name) > 1:
            raise SoloError(where(json_path, f"class_names lists {name!r} twice"))
        if name not in id_of:
            close = difflib.get_close_matches(str(name), list(id_of), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; categories are {list(id_of)}"
            raise SoloError(where(json_path, f"unknown class name {name!r} in class_names{hint}"))
        if len(id_of[name]) > 1:
            raise SoloError(where(json_path, f"class name {name!r} is ambiguous: category ids {id_of[name]}"))
        cat_ids.append(id_of[name][0])
    return cat_ids, class_names


class _SkipLog:
    """Counts skipped polygons / annotations; raises instead under strict."""

    def __init__(self, json_path, strict):
        self.json_path = json_path
        self.strict = strict
        self.polygons = 0
        self.annotations = 0
        self.first = None

    def polygon(self, context, problem):
        if self.strict:
            raise SoloError(where(context, f"{problem} (strict=True)"))
        self.polygons += 1
        self.first = self.first or f"{context}: {problem}"

    def annotation(self, context, problem, *, strict_error=True):
        if self.strict and strict_error:
            raise SoloError(where(context, f"{problem} (strict=True)"))
        self.annotations += 1
        self.first = self.first or f"{context}: {problem}"

    def warn(self):
        if self.polygons or self.annotations:
            warnings.warn(
                f"{self.json_path}: skipped {self.polygons} invalid polygon(s) and dropped "
                f"{self.annotations} annotation(s) without a usable segmentation "
                f"(first: {self.first}); pass strict=True to make this an error",
                stacklevel=3,
            )


def _parse_annotation(json_path, index, ann, images, all_cats, label_of, stats, skipped):
    """Validates one annotation; returns (image_id, AnnRecord) or None (dropped)."""
    _check_entry(ann, "annotations", index, json_path, ("image_id", "category_id"))
    ann_id = _as_int(ann.get("id", index), "id", where(json_path, f"annotations[{index}]"))
    context = where(json_path, f"annotation {ann_id}")
    image_id = _as_int(ann["image_id"], "image_id", context)
    if image_id not in images:
        raise SoloError(where(context, f"unknown image_id {image_id}"))
    context = where(json_path, f"image {image_id}", f"annotation {ann_id}")
    category_id = _as_int(ann["category_id"], "category_id", context)
    if category_id not in all_cats:
        raise SoloError(where(context, f"unknown category_id {category_id}"))
    if category_id not in label_of:
        stats["other_category"] += 1
        return None
    _, _, width, height = images[image_id]
    iscrowd = ann.get("iscrowd", 0)
    if iscrowd not in (0, 1):
        raise SoloError(where(context, f"'iscrowd' must be 0 or 1, got {iscrowd!r}"))
    area = ann.get("area")
    area = None if area is None else _as_number(area, "area", context)
    bbox, box_clipped = _parse_bbox(ann.get("bbox"), width, height, context)
    segmentation, seg_clipped = _parse_segmentation(ann.get("segmentation"), width, height, context, skipped)
    if segmentation is None:
        return None
    stats["clipped"] += box_clipped or seg_clipped
    stats["annotations"] += 1
    stats["crowd"] += bool(iscrowd)
    return image_id, AnnRecord(
        ann_id=ann_id,
        label=label_of[category_id],
        category_id=category_id,
        segmentation=segmentation,
        bbox=bbox,
        iscrowd=bool(iscrowd),
        area=area,
    )


def _parse_bbox(bbox, width, height, context):
    """Returns ((x, y, w, h) clipped to the image or None, clipped?)."""
    if bbox is None:
        return None, False
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise SoloError(where(context, f"'bbox' must be [x, y, w, h], got {bbox!r}"))
    x, y, w, h = (_as_number(v, "bbox", context) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise SoloError(where(context, f"'bbox' must be finite [x, y, w, h] with w, h >= 0, got {bbox!r}"))
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    clipped = (x1, y1, x2, y2) != (x, y, x + w, y + h)
    return (x1, y1, x2 - x1, y2 - y1), clipped


def _parse_segmentation(segmentation, width, height, context, skipped):
    """Returns (valid segmentation or None, clipped?)."""
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        skipped.annotation(context, "no segmentation")
        return None, False
    if isinstance(segmentation, dict):
        return _check_rle(segmentation, width, height, context), False
    if not isinstance(segmentation, list) or not all(isinstance(p, list) for p in segmentation):
        raise SoloError(
            where(
                context,
                "'segmentation' must be polygons [[x0, y0, x1, y1, ...], ...] or an RLE "
                f"{{'size': [h, w], 'counts': ...}}, got {_short(segmentation)}",
            )
        )
    polygons, clipped, invalid = [], False, False
    for polygon in segmentation:
        values = [_as_number(v, "segmentation", context) for v in polygon]
        if len(values) % 2:
            skipped.polygon(context, f"polygon with an odd coordinate count ({len(values)})")
            invalid = True
            continue
        if len(values) < 6:
            skipped.polygon(context, f"polygon with fewer than 3 points ({len(values) // 2})")
            invalid = True
            continue
        if not all(math.isfinite(v) for v in values):
            skipped.polygon(context, "polygon with non-finite coordinates")
            invalid = True
            continue
        points = np.asarray(values, np.float64).reshape(-1, 2)
        inside = (points.min() >= 0) & (points[:, 0].max() <= width) & (points[:, 1].max() <= height)
        if not inside:
            clipped = True
            points = _clip_polygon(points, width, height)
            if len(points) < 3:
                continue  # entirely outside the image
        polygons.append(points.reshape(-1).tolist())
    if not polygons:
        # Outside the image entirely is not malformed: dropped even under strict.
        problem = "no valid polygon left" if invalid else "polygon entirely outside the image"
        skipped.annotation(context, problem, strict_error=invalid)
        return None, clipped
    return polygons, clipped


def _check_rle(rle, width, height, context):
    if "counts" not in rle or "size" not in rle:
        raise SoloError(where(context, "RLE segmentation needs 'counts' and 'size'"))
    size = rle["size"]
    if not isinstance(size, list) or len(size) != 2 or [_as_int(v, "size", context) for v in size] != [height, width]:
        expected = [height, width]
        raise SoloError(where(context, f"RLE size {size!r} does not match the image [height, width] = {expected}"))
    counts = rle["counts"]
    if isinstance(counts, list):
        values = [_as_int(v, "counts", context, minimum=0) for v in counts]
        total = sum(values)
    elif isinstance(counts, str):
        values = None
        total = _compressed_rle_length(counts, context)
    else:
        raise SoloError(where(context, f"RLE 'counts' must be a string or a list, got {type(counts).__name__}"))
    if total != height * width:
        raise SoloError(
            where(context, f"RLE covers {total} pixels but the image has {height}x{width} = {height * width}")
        )
    return {"size": [height, width], "counts": values if values is not None else counts}


def _compressed_rle_length(counts, context):
    """Sum of the run lengths of a compressed COCO RLE string.

    Validation only (masks are always decoded by pycocotools): pycocotools
    leaves the tail of an under-length RLE uninitialised instead of failing.
    Mirrors ``rleFrString`` in pycocotools' ``maskApi.c``.
    """
    runs, position = [], 0
    try:
        while position < len(counts):
            value, shift, more = 0, 0, True
            while more:
                char = ord(counts[position]) - 48
                value |= (char & 0x1F) << shift
                more = char & 0x20
                position += 1
                shift += 5
                if shift > 64:  # pycocotools reads run lengths into a 64-bit long
                    raise ValueError
                if not more and char & 0x10:
                    value |= -1 << shift
            if len(runs) > 2:
                value += runs[-2]
            if value < 0:
                raise ValueError
            runs.append(value)
    except (IndexError, ValueError):
        raise SoloError(where(context, "malformed compressed RLE 'counts'")) from None
    return sum(runs)


def _clip_polygon(points, width, height):
    """Clips a polygon to the rectangle [0, width] x [0, height].

    Sutherland-Hodgman against each image edge; the part of the polygon inside
    the image is unchanged (a concave polygon may gain zero-area edges along
    the border, which rasterise to nothing).
    """
    edges = (
        (0, 0.0, False),  # x >= 0
        (0, float(width), True),  # x <= width
        (1, 0.0, False),  # y >= 0
        (1, float(height), True),  # y <= height
    )
    for axis, limit, upper in edges:
        if len(points) == 0:
            break
        inside = points[:, axis] <= limit if upper else points[:, axis] >= limit
        output = []
        for k in range(len(points)):
            current, previous = points[k], points[k - 1]
            if inside[k] != inside[k - 1]:
                t = (limit - previous[axis]) / (current[axis] - previous[axis])
                output.append(previous + t * (current - previous))
            if inside[k]:
                output.append(current)
        points = np.asarray(output, np.float64).reshape(-1, 2)
    return points


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
