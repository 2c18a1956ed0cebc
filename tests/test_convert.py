"""Tests for keras_solo.data.convert: Cityscapes polygons and YOLO labels -> COCO."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from keras_solo.data.convert import convert_cityscapes, convert_yolo, write_json
from keras_solo.errors import SoloError

CITYSCAPES5 = Path("/work/shared/data/cityscapes5/data.yaml")
PAPER = ["person", "rider", "car", "truck", "bus"]


def _square(x, y, size):
    return [[x, y], [x + size, y], [x + size, y + size], [x, y + size]]


# ---------------------------------------------------------------------------
# write_json


def test_write_json_is_atomic_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "sub" / "out.json"
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(SoloError, match="out.json: already exists"):
        write_json(path, {"a": 2})
    write_json(path, {"a": 3}, overwrite=True)
    assert json.loads(path.read_text()) == {"a": 3}
    assert os.listdir(path.parent) == ["out.json"]  # no temp file left behind
    with pytest.raises(TypeError):
        write_json(path, {"a": object()}, overwrite=True)
    assert json.loads(path.read_text()) == {"a": 3}  # a failed write keeps the old file
    assert os.listdir(path.parent) == ["out.json"]


# ---------------------------------------------------------------------------
# Cityscapes


def _write_gtfine(root, split, city, stem, objects, size=(100, 50)):
    folder = root / "gtFine" / split / city
    folder.mkdir(parents=True, exist_ok=True)
    data = {"imgHeight": size[1], "imgWidth": size[0], "objects": objects}
    (folder / f"{stem}_gtFine_polygons.json").write_text(json.dumps(data))


@pytest.fixture
def cityscapes(tmp_path):
    root = tmp_path / "cityscapes"
    _write_gtfine(
        root,
        "train",
        "aachen",
        "aachen_000000_000019",
        [
            {"label": "road", "polygon": _square(0, 0, 90)},
            {"label": "person", "polygon": _square(10, 10, 20)},
            {"label": "car", "polygon": _square(40, 5, 30)},
            {"label": "persongroup", "polygon": _square(60, 20, 10)},
            {"label": "rider", "polygon": [[1, 1], [5, 5]]},  # < 3 points: skipped
            {"label": "bicycle", "polygon": _square(0, 0, 5)},
            {"label": "truck", "polygon": _square(0, 0, 5), "deleted": 1},
        ],
    )
    _write_gtfine(
        root,
        "train",
        "bochum",
        "bochum_000000_000313",
        [
            {"label": "bus", "polygon": _square(5, 5, 40)},
            {"label": "ridergroup", "polygon": _square(50, 10, 20)},
            {"label": "person", "polygon": [[3, 3], [3, 3], [3, 3]]},  # no pixel: skipped
        ],
    )
    _write_gtfine(root, "val", "lindau", "lindau_000000_000019", [{"label": "car", "polygon": _square(1, 1, 8)}])
    return root


def test_cityscapes_converts_classes_groups_and_skips(cityscapes, tmp_path):
    out = tmp_path / "out" / "instances_train.json"
    stats = convert_cityscapes(cityscapes, "train", out)
    assert stats["images"] == 2
    assert stats["per_class"] == {"person": 1, "rider": 0, "car": 1, "truck": 0, "bus": 1}
    assert stats["crowd_per_class"] == {"person": 1, "rider": 1, "car": 0, "truck": 0, "bus": 0}
    assert stats["skipped_short"] == 1 and stats["skipped_empty"] == 1
    assert stats["annotations"] == 5 and stats["crowd"] == 2
    assert stats["image_root"] == str(cityscapes)

    coco = COCO(str(out))
    assert [(c["id"], c["name"]) for c in coco.dataset["categories"]] == list(enumerate(PAPER, start=1))
    assert coco.imgs[1] == {
        "id": 1,
        "file_name": "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
        "width": 100,
        "height": 50,
    }
    anns = coco.dataset["annotations"]
    person, car, crowd = anns[0], anns[1], anns[2]
    assert person["category_id"] == 1 and person["iscrowd"] == 0
    assert person["segmentation"] == [[10, 10, 30, 10, 30, 30, 10, 30]]
    assert person["area"] == 400 and person["bbox"] == [10, 10, 20, 20]
    assert car["category_id"] == 3 and car["area"] == 900
    # persongroup -> crowd person, stored as RLE
    assert crowd["category_id"] == 1 and crowd["iscrowd"] == 1
    assert isinstance(crowd["segmentation"], dict) and crowd["segmentation"]["size"] == [50, 100]
    assert coco.annToMask(crowd).sum() == crowd["area"] == 100
    assert crowd["bbox"] == [60, 20, 10, 10]
    assert [(a["image_id"], a["category_id"], a["iscrowd"]) for a in anns[3:]] == [(2, 5, 0), (2, 2, 1)]


def test_cityscapes_class_filter(cityscapes, tmp_path):
    stats = convert_cityscapes(cityscapes, "train", tmp_path / "a.json", classes=("car", "person"))
    coco = COCO(str(tmp_path / "a.json"))
    assert [(c["id"], c["name"]) for c in coco.dataset["categories"]] == [(1, "car"), (2, "person")]
    assert [(a["category_id"], a["iscrowd"]) for a in coco.dataset["annotations"]] == [(2, 0), (1, 0), (2, 1)]
    assert stats["skipped_short"] == 0  # the short polygon was a rider: not kept anyway


def test_cityscapes_other_split(cityscapes, tmp_path):
    stats = convert_cityscapes(cityscapes, "val", tmp_path / "val.json")
    assert stats["images"] == 1 and stats["per_class"]["car"] == 1


def test_cityscapes_errors_name_the_file(cityscapes, tmp_path):
    with pytest.raises(SoloError, match="nowhere: Cityscapes root not found"):
        convert_cityscapes(tmp_path / "nowhere", "train", tmp_path / "x.json")
    with pytest.raises(SoloError, match="gtFine/test: split folder not found"):
        convert_cityscapes(cityscapes, "test", tmp_path / "x.json")
    (cityscapes / "gtFine" / "test" / "x").mkdir(parents=True)
    with pytest.raises(SoloError, match="no \\*_gtFine_polygons.json files found"):
        convert_cityscapes(cityscapes, "test", tmp_path / "x.json")
    bad = cityscapes / "gtFine" / "train" / "aachen" / "aachen_000001_000019_gtFine_polygons.json"
    bad.write_text('{"imgHeight": 50, "imgWidth": ')
    with pytest.raises(SoloError, match="aachen_000001_000019_gtFine_polygons.json: cannot read polygon JSON"):
        convert_cityscapes(cityscapes, "train", tmp_path / "x.json")
    bad.write_text(json.dumps({"imgHeight": 50, "imgWidth": 100, "objects": [{"label": "car"}]}))
    with pytest.raises(SoloError, match="aachen_000001_000019_gtFine_polygons.json: object 0"):
        convert_cityscapes(cityscapes, "train", tmp_path / "x.json")
    bad.write_text(json.dumps({"imgHeight": 50, "objects": []}))
    with pytest.raises(SoloError, match="missing key 'imgWidth'"):
        convert_cityscapes(cityscapes, "train", tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_cityscapes_refuses_to_overwrite(cityscapes, tmp_path):
    out = tmp_path / "out.json"
    out.write_text("{}")
    with pytest.raises(SoloError, match="out.json: already exists"):
        convert_cityscapes(cityscapes, "train", out)
    assert out.read_text() == "{}"
    convert_cityscapes(cityscapes, "train", out, overwrite=True)
    assert len(json.loads(out.read_text())["annotations"]) == 5


# ---------------------------------------------------------------------------
# YOLO


@pytest.fixture
def yolo(tmp_path):
    """A tiny YOLO dataset: names person, car, truck; three train images."""
    root = tmp_path / "yolo"
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
    cv2.imwrite(str(root / "train/images/a.png"), np.zeros((20, 40, 3), np.uint8))
    cv2.imwrite(str(root / "train/images/b.jpg"), np.zeros((30, 30, 3), np.uint8))
    cv2.imwrite(str(root / "train/images/c.png"), np.zeros((10, 10, 3), np.uint8))  # no label file
    cv2.imwrite(str(root / "val/images/v.png"), np.zeros((8, 16, 3), np.uint8))
    (root / "train/labels/a.txt").write_text(
        "0 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n"  # polygon, person
        "1 0.5 0.5 0.5 0.5\n"  # box, car
        "\n"
        "2 0.1 0.1 0.2 0.2 0.3\n"  # line 4: odd coordinate count
        "x 0.1 0.1 0.2 0.2 0.3 0.3\n"  # line 5: non-numeric
        "7 0.1 0.1 0.2 0.2 0.3 0.3\n"  # line 6: class out of range
        "0 0.1 0.1 0.2 0.2 0.3 0.1 0.4\n"  # line 7: odd
        "0 0.1 0.1\n"  # line 8: fewer than 3 points
        "2 0.0 0.0 1.0 0.0 1.0 1.0\n"  # truck triangle
        "1 0.1 0.1 0.2 0.2 1.5 0.3\n"  # line 10: outside 0..1
    )
    (root / "train/labels/b.txt").write_text("2 0.5 0.5 1.0 1.0\n1 0.0 0.0 0.5 0.0 0.5 0.5 0.0 0.5\n")
    (root / "val/labels/v.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text(
        "train: train/images\nval: val/images\nnc: 3\nnames: {0: person, 1: car, 2: truck}\n"
    )
    return root


def test_yolo_converts_polygons_boxes_and_counts_bad_lines(yolo, tmp_path):
    out = tmp_path / "train.json"
    with pytest.warns(UserWarning, match="skipped 6 malformed label lines"):
        stats = convert_yolo(yolo / "data.yaml", "train", out)
    assert stats["malformed"] == {
        "odd coordinate count": 2,
        "non-numeric value": 1,
        "class index out of range": 1,
        "fewer than 3 points": 1,
        "coordinate outside 0..1": 1,
    }
    assert stats["issues"][0].endswith("a.txt:4: odd coordinate count")
    assert stats["images"] == 3 and stats["missing_labels"] == 1 and stats["negatives"] == 1
    assert stats["per_class"] == {"person": 1, "car": 2, "truck": 2}
    assert stats["image_root"] == str(yolo)

    coco = COCO(str(out))
    assert [(c["id"], c["name"]) for c in coco.dataset["categories"]] == [(1, "person"), (2, "car"), (3, "truck")]
    assert [(im["file_name"], im["width"], im["height"]) for im in coco.dataset["images"]] == [
        ("train/images/a.png", 40, 20),
        ("train/images/b.jpg", 30, 30),
        ("train/images/c.png", 10, 10),
    ]
    polygon, box, triangle, full_box, square = coco.dataset["annotations"]
    assert polygon["category_id"] == 1 and polygon["segmentation"] == [[10, 5, 30, 5, 30, 15, 10, 15]]
    assert polygon["area"] == 200 and polygon["bbox"] == [10, 5, 20, 10]
    # a 5-number line is a box cx cy w h -> rectangle polygon
    assert box["category_id"] == 2 and box["segmentation"] == [[10, 5, 30, 5, 30, 15, 10, 15]]
    assert triangle["category_id"] == 3 and triangle["image_id"] == 1
    assert full_box["image_id"] == 2 and full_box["area"] == 900 and full_box["bbox"] == [0, 0, 30, 30]
    assert square["image_id"] == 2 and square["area"] == 225
    for ann in coco.dataset["annotations"]:
        assert coco.annToMask(ann).sum() == ann["area"] > 0


def test_yolo_class_filter_reorders_and_counts_dropped(yolo, tmp_path):
    with pytest.warns(UserWarning):
        stats = convert_yolo(yolo / "data.yaml", "train", tmp_path / "t.json", classes=["truck", "person"])
    coco = COCO(str(tmp_path / "t.json"))
    assert [(c["id"], c["name"]) for c in coco.dataset["categories"]] == [(1, "truck"), (2, "person")]
    assert [a["category_id"] for a in coco.dataset["annotations"]] == [2, 1, 1]
    assert stats["dropped_classes"] == {"car": 2}
    assert stats["per_class"] == {"truck": 2, "person": 1}


def test_yolo_strict_names_file_and_line(yolo, tmp_path):
    with pytest.raises(SoloError, match="a.txt: line 4: odd coordinate count"):
        convert_yolo(yolo / "data.yaml", "train", tmp_path / "s.json", strict=True)
    assert not (tmp_path / "s.json").exists()


def test_yolo_val_split_list_names_and_path_key(yolo, tmp_path):
    # names as a list, and a `path:` key relative to the YAML's folder
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "d.yaml").write_text("path: ../yolo\nval: val/images\nnames: [person, car, truck]\n")
    stats = convert_yolo(tmp_path / "cfg" / "d.yaml", "val", tmp_path / "v.json")
    coco = COCO(str(tmp_path / "v.json"))
    assert coco.dataset["images"] == [{"id": 1, "file_name": "val/images/v.png", "width": 16, "height": 8}]
    assert coco.dataset["annotations"][0]["bbox"] == [4, 2, 8, 4]
    assert stats["malformed"] == {}


def test_yolo_crowd_groups(tmp_path):
    root = tmp_path / "g"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images/a.png"), np.zeros((10, 10, 3), np.uint8))
    (root / "labels/a.txt").write_text("0 0.5 0.5 0.4 0.4\n1 0.0 0.0 0.5 0.0 0.5 0.5\n")
    (root / "d.yaml").write_text("train: images\nnames: [person, persongroup]\n")
    stats = convert_yolo(root / "d.yaml", "train", tmp_path / "a.json", classes=["person"])
    assert stats["dropped_classes"] == {"persongroup": 1} and stats["crowd"] == 0
    stats = convert_yolo(root / "d.yaml", "train", tmp_path / "b.json", classes=["person"], crowd_groups=True)
    assert stats["crowd_per_class"] == {"person": 1} and stats["dropped_classes"] == {}
    crowd = json.loads((tmp_path / "b.json").read_text())["annotations"][1]
    assert crowd["iscrowd"] == 1 and crowd["category_id"] == 1 and isinstance(crowd["segmentation"], dict)


def test_yolo_errors(yolo, tmp_path):
    with pytest.raises(SoloError, match="missing.yaml: file not found"):
        convert_yolo(tmp_path / "missing.yaml", "train", tmp_path / "o.json")
    with pytest.raises(SoloError, match="no 'test' entry"):
        convert_yolo(yolo / "data.yaml", "test", tmp_path / "o.json")
    with pytest.raises(SoloError, match="class 'persn' not in names .*did you mean 'person'"):
        convert_yolo(yolo / "data.yaml", "train", tmp_path / "o.json", classes=["persn"])
    (yolo / "bad.yaml").write_text("train: train/images\nnc: 4\nnames: [a, b, c]\n")
    with pytest.raises(SoloError, match="nc = 4 but 'names' has 3 entries"):
        convert_yolo(yolo / "bad.yaml", "train", tmp_path / "o.json")
    (yolo / "bad.yaml").write_text("train: nowhere/images\nnames: [a]\n")
    with pytest.raises(SoloError, match="split path .*nowhere/images not found"):
        convert_yolo(yolo / "bad.yaml", "train", tmp_path / "o.json")
    (yolo / "train/images/broken.png").write_bytes(b"not an image")
    with pytest.raises(SoloError, match="broken.png: not a readable image"):
        convert_yolo(yolo / "data.yaml", "train", tmp_path / "o.json")
    out = tmp_path / "exists.json"
    out.write_text("{}")
    with pytest.raises(SoloError, match="exists.json: already exists"):
        convert_yolo(yolo / "data.yaml", "val", out)


def _check_cityscapes5(stats, out, images):
    assert stats["images"] == images and stats["malformed"] == {}
    assert all(stats["per_class"][name] > 0 for name in PAPER)
    assert stats["dropped_classes"].keys() <= {"bicycle", "motorcycle", "persongroup", "traffic sign", "vegetation"}
    coco = COCO(str(out))
    assert {(im["width"], im["height"]) for im in coco.dataset["images"]} == {(1280, 640)}
    assert all(ann["area"] > 0 for ann in coco.dataset["annotations"])
    first = coco.dataset["images"][0]["file_name"]
    assert (Path(stats["image_root"]) / first).is_file()


@pytest.mark.skipif(not CITYSCAPES5.exists(), reason="cityscapes5 data not present")
def test_real_cityscapes5_val_converts(tmp_path):
    out = tmp_path / "val.json"
    stats = convert_yolo(CITYSCAPES5, "val", out, classes=PAPER)
    _check_cityscapes5(stats, out, images=50)


@pytest.mark.slow
@pytest.mark.skipif(not CITYSCAPES5.exists(), reason="cityscapes5 data not present")
def test_real_cityscapes5_train_converts(tmp_path):
    out = tmp_path / "train.json"
    stats = convert_yolo(CITYSCAPES5, "train", out, classes=PAPER)
    _check_cityscapes5(stats, out, images=450)


def test_the_command_prints_a_summary_and_writes_the_stats_when_asked(yolo, tmp_path, capsys):
    """The converters printed their stats as one Python dict."""
    from keras_solo.cli import main

    out, stats_json = tmp_path / "t.json", tmp_path / "stats.json"
    with pytest.warns(UserWarning):
        assert main(["convert-yolo", "--data", str(yolo / "data.yaml"), "--split", "train", "--out", str(out),
                     "--classes", "truck,person", "--stats-json", str(stats_json)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"wrote {out}: 3 images, 3 instances"
    assert lines[1] == "  per class: truck 2, person 1"
    assert lines[2] == "  negatives 1, missing labels 1"
    assert lines[3] == "  dropped classes: car 2" and "{" not in "".join(lines)
    assert json.load(open(stats_json))["per_class"] == {"truck": 2, "person": 1}
    assert main(["convert-yolo", "--data", str(yolo / "data.yaml"), "--split", "train", "--out",
                 str(tmp_path / "u.json"), "--stats-json", str(stats_json)]) == 2
    assert "stats.json: already exists; use --overwrite" in capsys.readouterr().err
