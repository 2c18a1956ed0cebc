"""Tests for keras_solo.data.synthetic: determinism and a valid, useful COCO set."""

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from keras_solo.data.coco import decode_instances, load_coco
from keras_solo.data.synthetic import CLASS_NAMES, make_synthetic
from keras_solo.errors import SoloError


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def _boxes_overlap(a, b):
    return min(a[0] + a[2], b[0] + b[2]) > max(a[0], b[0]) and min(a[1] + a[3], b[1] + b[3]) > max(a[1], b[1])


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    result = make_synthetic(root, images=30, seed=0)
    return root, result


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a = _files(make_synthetic(tmp_path / "a", images=6, seed=3)["paths"]["root"])
    b = _files(make_synthetic(tmp_path / "b", images=6, seed=3)["paths"]["root"])
    c = _files(make_synthetic(tmp_path / "c", images=6, seed=4)["paths"]["root"])
    assert sorted(a) == ["instances_train.json", "instances_val.json"] + [
        f"train/{i:06d}.png" for i in range(1, 6)
    ] + ["val/000006.png"]
    assert a == b
    assert sorted(c) == sorted(a)
    different = [name for name in a if a[name] != c[name]]
    # Every non-empty image and both JSON files change with the seed.
    assert "instances_train.json" in different and "instances_val.json" in different
    assert len(different) >= 5


def test_jpeg_output_is_deterministic(tmp_path):
    a = _files(make_synthetic(tmp_path / "a", images=2, seed=1, image_format="jpg")["paths"]["root"])
    b = _files(make_synthetic(tmp_path / "b", images=2, seed=1, image_format="jpg")["paths"]["root"])
    assert a == b
    assert "train/000001.jpg" in a and a["train/000001.jpg"][:2] == b"\xff\xd8"


def test_layout_and_split_sizes(generated):
    root, result = generated
    assert result["paths"] == {
        "root": str(root),
        "image_root": str(root),
        "train": str(root / "instances_train.json"),
        "val": str(root / "instances_val.json"),
    }
    train = json.loads((root / "instances_train.json").read_text())
    val = json.loads((root / "instances_val.json").read_text())
    assert len(train["images"]) == 24 and len(val["images"]) == 6
    ids = [im["id"] for im in train["images"] + val["images"]]
    assert ids == list(range(1, 31))  # unique across splits
    assert train["images"][0] == {"id": 1, "file_name": "train/000001.png", "width": 256, "height": 128}
    assert val["images"][0]["file_name"] == "val/000025.png"
    assert [(c["id"], c["name"]) for c in train["categories"]] == list(enumerate(CLASS_NAMES, start=1))


def test_pycocotools_loads_and_every_mask_is_valid(generated):
    root, _ = generated
    coco = COCO(str(root / "instances_train.json"))
    assert coco.getAnnIds(), "no annotations"
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann)
        assert mask.shape == (128, 256)
        assert mask.sum() == ann["area"] >= 6
        assert ann["iscrowd"] == 0
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_visible_masks_do_not_overlap(generated):
    """Depth-ordered painting: each annotation holds the visible part only."""
    root, _ = generated
    coco = COCO(str(root / "instances_train.json"))
    for image_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        if anns:
            cover = sum(coco.annToMask(a).astype(np.int32) for a in anns)
            assert cover.max() == 1


def test_dataset_covers_classes_sizes_groups_and_negatives(generated):
    root, _ = generated
    anns, images = [], []
    for split in ("train", "val"):
        data = json.loads((root / f"instances_{split}.json").read_text())
        anns += data["annotations"]
        images += data["images"]
    assert {a["category_id"] for a in anns} == {1, 2, 3, 4, 5}
    areas = np.array([a["area"] for a in anns])
    assert (areas < 32**2).sum() > 0
    assert ((areas >= 32**2) & (areas < 96**2)).sum() > 0
    assert (areas >= 96**2).sum() > 0
    by_image = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    assert len(by_image) < len(images)  # at least one empty image
    overlapping = [
        image_id
        for image_id, group in by_image.items()
        if any(
            a["category_id"] == b["category_id"] and _boxes_overlap(a["bbox"], b["bbox"])
            for i, a in enumerate(group)
            for b in group[i + 1 :]
        )
    ]
    assert len(overlapping) >= 3


def test_returned_stats_match_the_json(generated):
    root, result = generated
    for split in ("train", "val"):
        data = json.loads((root / f"instances_{split}.json").read_text())
        stats = result["stats"][split]
        per_class = {name: 0 for name in CLASS_NAMES}
        area = {"small": 0, "medium": 0, "large": 0}
        for a in data["annotations"]:
            per_class[CLASS_NAMES[a["category_id"] - 1]] += 1
            area["small" if a["area"] < 1024 else "medium" if a["area"] < 9216 else "large"] += 1
        annotated = {a["image_id"] for a in data["annotations"]}
        assert stats["per_class"] == per_class
        assert stats["area"] == area
        assert stats["instances"] == len(data["annotations"])
        assert stats["images"] == len(data["images"])
        assert stats["empty_images"] == len(data["images"]) - len(annotated)
    assert result["stats"]["train"]["empty_images"] >= 1
    assert result["stats"]["total"]["instances"] == (
        result["stats"]["train"]["instances"] + result["stats"]["val"]["instances"]
    )
    total = result["stats"]["total"]
    assert result["summary"].startswith(f"30 images (24 train, 6 val; {total['empty_images']} empty), ")
    assert f"large {total['area']['large']})" in result["summary"]


def test_load_coco_finds_images_with_its_default_root(generated):
    root, _ = generated
    dataset = load_coco(root / "instances_val.json")
    assert dataset.class_names == CLASS_NAMES
    record = next(r for r in dataset.records if r.annotations)
    decoded = decode_instances(dataset, record)
    assert decoded["image"].shape == (128, 256, 3)
    assert len(decoded["masks"]) == len(record.annotations)


def test_polygon_masks_load_and_approximate_the_rle_masks(tmp_path):
    rle = make_synthetic(tmp_path / "rle", images=4, seed=5, val_fraction=0.0, empty_fraction=0.0)
    poly = make_synthetic(
        tmp_path / "poly", images=4, seed=5, val_fraction=0.0, empty_fraction=0.0, mask_format="polygon"
    )
    a = COCO(rle["paths"]["train"])
    b = COCO(poly["paths"]["train"])
    assert all(isinstance(ann["segmentation"], list) for ann in b.dataset["annotations"])
    assert all(isinstance(ann["segmentation"], dict) for ann in a.dataset["annotations"])
    # Same scenes; each polygon mask overlaps its exact mask closely.
    ious = []
    for ann in b.dataset["annotations"]:
        best = max(
            mask_utils.iou([a.annToRLE(x)], [b.annToRLE(ann)], [0])[0, 0]
            for x in a.dataset["annotations"]
            if x["image_id"] == ann["image_id"]
        )
        ious.append(best)
    assert np.median(ious) > 0.8
    assert b.dataset["images"] == a.dataset["images"]


def test_refuses_to_overwrite_without_flag(tmp_path):
    make_synthetic(tmp_path, images=2, seed=0)
    with pytest.raises(SoloError, match="instances_train.json: already exists"):
        make_synthetic(tmp_path, images=2, seed=0)
    result = make_synthetic(tmp_path, images=3, seed=1, overwrite=True)
    assert result["stats"]["total"]["images"] == 3


def test_overwrite_removes_stale_images(tmp_path):
    make_synthetic(tmp_path, images=5, seed=0, val_fraction=0.0)
    make_synthetic(tmp_path, images=2, seed=0, val_fraction=0.0, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["000001.png", "000002.png"]


def test_no_val_split_writes_no_val_file(tmp_path):
    result = make_synthetic(tmp_path, images=3, seed=0, val_fraction=0.0)
    assert result["paths"]["val"] is None and not (tmp_path / "instances_val.json").exists()
    assert result["stats"]["train"]["images"] == 3 and result["stats"]["val"]["images"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instances_train.json", "train"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"images": 0}, "images"),
        ({"size": (16, 16)}, "size"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"mask_format": "bitmap"}, "mask_format"),
        ({"image_format": "gif"}, "image_format"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic(tmp_path, **kwargs)
