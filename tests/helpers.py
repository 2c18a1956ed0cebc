"""Shared test helpers: a tiny hand-made COCO dataset on disk.

``write_tiny_coco(dirpath)`` writes three small PNG images and an instances
JSON that exercises every segmentation form:

=====  ===========  =====================================================
image  size (WxH)   annotations (ann id: category, form)
=====  ===========  =====================================================
1      96 x 64      1: cat polygon (rectangle)
                    2: dog polygon, L-shaped (asymmetric, for flip tests)
                    3: person crowd, uncompressed RLE
2      64 x 80      4: bird compressed RLE (ellipse)
                    5: cat polygon in two parts (two triangles)
                    6: dog uncompressed RLE, not crowd
3      72 x 72      none (a negative image)
=====  ===========  =====================================================

Category ids are non-contiguous (1 person, 3 cat, 5 bird, 7 dog), so the
contiguous labels are person 0, cat 1, bird 2, dog 3. Every annotation is
painted into its image in its own colour (``TinyCoco.colours``) on a dark
grey background, exactly over its pycocotools mask, so a test can check that
a transformed mask still sits on its colour.
"""

import dataclasses
import importlib.util
import json
import os

import cv2
import numpy as np
from pycocotools import mask as mask_utils

BACKGROUND = (40, 40, 40)
CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "human"},
    {"id": 3, "name": "cat", "supercategory": "animal"},
    {"id": 5, "name": "bird", "supercategory": "animal"},
    {"id": 7, "name": "dog", "supercategory": "animal"},
]
COLOURS = {
    1: (230, 30, 30),
    2: (255, 0, 255),
    3: (30, 230, 30),
    4: (30, 30, 230),
    5: (230, 230, 30),
    6: (30, 230, 230),
}
L_SHAPE = [50, 10, 60, 10, 60, 40, 80, 40, 80, 50, 50, 50]


@dataclasses.dataclass
class TinyCoco:
    """What :func:`write_tiny_coco` wrote.

    Attributes:
        json_path: the instances JSON.
        image_root: the folder the JSON's ``file_name`` entries are relative to.
        data: the JSON content as a dict (modify and :func:`write_json` it to
            make a broken variant).
        colours: ``{ann_id: (r, g, b)}`` each annotation's paint colour.
    """

    json_path: str
    image_root: str
    data: dict
    colours: dict


def uncompressed_rle(mask):
    """COCO uncompressed RLE (column-major run lengths, starting with 0s)."""
    flat = np.asarray(mask, np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def compressed_rle(mask):
    """COCO compressed RLE (string counts) via pycocotools."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_json(path, data):
    """Writes ``data`` as JSON to ``path``; returns ``path``."""
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(data, stream)
    return str(path)


def _polygon_mask(polygons, height, width):
    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles))


def write_tiny_coco(dirpath, *, json_name="instances.json", image_dir="images"):
    """Writes the tiny COCO dataset described in the module docstring.

    Args:
        dirpath: folder to write into (created if needed).
        json_name: JSON file name. Defaults to "instances.json".
        image_dir: sub-folder for the PNG images, written into ``file_name``.
            Defaults to "images".

    Returns:
        A :class:`TinyCoco`.
    """
    dirpath = os.fspath(dirpath)
    os.makedirs(os.path.join(dirpath, image_dir), exist_ok=True)

    crowd = np.zeros((64, 96), np.uint8)
    crowd[52:62, 4:40] = 1
    ellipse = np.zeros((80, 64), np.uint8)
    cv2.ellipse(ellipse, (20, 20), (14, 9), 30, 0, 360, 1, -1)
    dog_blob = np.zeros((80, 64), np.uint8)
    dog_blob[50:74, 36:60] = 1
    dog_blob[58:66, 44:52] = 0  # a hole

    images = [
        {"id": 1, "file_name": f"{image_dir}/one.png", "width": 96, "height": 64},
        {"id": 2, "file_name": f"{image_dir}/two.png", "width": 64, "height": 80},
        {"id": 3, "file_name": f"{image_dir}/empty.png", "width": 72, "height": 72},
    ]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0, "segmentation": [[8, 8, 40, 8, 40, 30, 8, 30]]},
        {"id": 2, "image_id": 1, "category_id": 7, "iscrowd": 0, "segmentation": [list(L_SHAPE)]},
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": uncompressed_rle(crowd)},
        {"id": 4, "image_id": 2, "category_id": 5, "iscrowd": 0, "segmentation": compressed_rle(ellipse)},
        {
            "id": 5,
            "image_id": 2,
            "category_id": 3,
            "iscrowd": 0,
            "segmentation": [[40, 4, 60, 4, 50, 24], [4, 44, 24, 44, 4, 64]],
        },
        {"id": 6, "image_id": 2, "category_id": 7, "iscrowd": 0, "segmentation": uncompressed_rle(dog_blob)},
    ]
    sizes = {image["id"]: (image["height"], image["width"]) for image in images}
    pixels = {image_id: np.full((h, w, 3), BACKGROUND, np.uint8) for image_id, (h, w) in sizes.items()}
    for ann in annotations:
        height, width = sizes[ann["image_id"]]
        segmentation = ann["segmentation"]
        if isinstance(segmentation, list):
            mask = _polygon_mask(segmentation, height, width)
        elif isinstance(segmentation["counts"], list):
            mask = mask_utils.decode(mask_utils.frPyObjects(segmentation, height, width))
        else:
            mask = mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()})
        pixels[ann["image_id"]][mask.astype(bool)] = COLOURS[ann["id"]]
        rle = mask_utils.encode(np.asfortranarray(mask))
        ann["area"] = float(mask_utils.area(rle))
        ann["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
    for image in images:
        path = os.path.join(dirpath, image["file_name"])
        cv2.imwrite(path, cv2.cvtColor(pixels[image["id"]], cv2.COLOR_RGB2BGR))

    data = {
        "info": {"description": "keras-solo tiny test set"},
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in CATEGORIES],
    }
    json_path = write_json(os.path.join(dirpath, json_name), data)
    return TinyCoco(json_path=json_path, image_root=dirpath, data=data, colours=dict(COLOURS))


# ---------------------------------------------------------------------------
# Tiny SOLO configs for model / training tests (64-128 px, 2 levels).

TINY_MODEL_OVERRIDES = (
    "model.backbone=tiny",
    "model.input_size=[128,64]",
    "model.levels=[P3,P4]",
    "model.grids=[8,4]",
    "model.head_resize=none",
    "model.fpn_channels=32",
    "model.head_convs=1",
    "model.head_channels=32",
    "model.norm_groups=8",
    "model.attention_dim=16",
    "model.scale_reference_size=64",
    "model.scale_ranges=[[1,32],[16,512]]",
    "model.max_positives=32",
    "data.max_instances=8",
    "eval.nms_pre=40",
    "eval.max_per_img=20",
)


def tiny_config(data_dir=None, *extra):
    """A tiny SOLO config (2 levels, grids 8/4, 128x64 input) for tests.

    Args:
        data_dir: folder with instances_train.json / instances_val.json
            (e.g. from `make_synthetic(..., size=(128, 64))`).
        extra: more ``dotted.key=value`` overrides.
    """
    import os

    from keras_solo.config import load_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    overrides = list(TINY_MODEL_OVERRIDES)
    if data_dir is not None:
        overrides += [f"data.train_json={os.path.join(data_dir, 'instances_train.json')}",
                      f"data.val_json={os.path.join(data_dir, 'instances_val.json')}"]
    overrides += list(extra)
    return load_config(os.path.join(root, "training", "demo.yaml"), overrides)


def fixed_batch(config):
    """One batch of 2 images with 3 instances for `tiny_config()`, the same in every process
    (tests/test_jax_backend.py compares backends on it)."""
    width, height = config.model.input_size
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, height, width, 3)).astype("float32")
    m = config.data.max_instances
    masks = np.zeros((2, m, height // 4, width // 4), np.uint8)
    masks[:, 0, 4:10, 6:20] = 1
    masks[1, 1, 2:12, 2:8] = 1
    classes = np.full((2, m), -1, np.int32)
    classes[:, 0], classes[1, 1] = 1, 3
    boxes = np.zeros((2, m, 4), np.float32)
    boxes[:, 0], boxes[1, 1] = [24, 16, 80, 40], [8, 8, 32, 48]
    y = {"masks": masks, "classes": classes, "boxes": boxes,
         "ignore": np.zeros((2, height // 4, width // 4), np.uint8),
         "image_info": np.tile(np.array([height, width, 1, 1], np.float32), (2, 1))}
    return x, y


def load_benchmark(name):
    """The script benchmarks/NAME.py as a module (benchmarks/ is no package)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
