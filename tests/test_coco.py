"""Tests for keras_solo.data.coco (loader, rasterisation, bad input)."""

import json
import os
import warnings

import numpy as np
import pytest
from helpers import COLOURS, L_SHAPE, compressed_rle, write_json, write_tiny_coco
from pycocotools.coco import COCO

from keras_solo.data import transforms
from keras_solo.data.coco import decode_instances, load_coco, read_image
from keras_solo.errors import SoloError


def _record(dataset, image_id):
    return next(r for r in dataset.records if r.image_id == image_id)


def _expect_error(func, *needles):
    with pytest.raises(SoloError) as info:
        func()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message, message
    return message


# ---------------------------------------------------------------------------
# Loading and decoding


def test_masks_equal_pycocotools_ann_to_mask(tiny_coco):
    dataset = load_coco(tiny_coco.json_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coco = COCO(tiny_coco.json_path)
    seen = set()
    for record in dataset.records:
        decoded = decode_instances(dataset, record)
        for mask, ann_id in zip(decoded["masks"], decoded["ann_ids"]):
            expected = coco.annToMask(coco.anns[int(ann_id)])
            np.testing.assert_array_equal(mask, expected, err_msg=f"annotation {ann_id}")
            assert mask.sum() > 20
            seen.add(int(ann_id))
    # polygon, L polygon, uncompressed crowd RLE, compressed RLE, two-part polygon, uncompressed RLE
    assert seen == {1, 2, 3, 4, 5, 6}


def test_rle_forms_are_kept(tiny_coco):
    dataset = load_coco(tiny_coco.json_path)
    anns = {a.ann_id: a for r in dataset.records for a in r.annotations}
    assert isinstance(anns[4].segmentation["counts"], str)  # compressed
    assert isinstance(anns[6].segmentation["counts"], list)  # uncompressed, not crowd
    assert isinstance(anns[3].segmentation["counts"], list) and anns[3].iscrowd
    assert len(anns[5].segmentation) == 2  # two polygon parts


def test_category_mapping_sorted_by_id(tiny_coco):
    dataset = load_coco(tiny_coco.json_path)
    assert dataset.class_names == ("person", "cat", "bird", "dog")
    assert dataset.cat_ids == (1, 3, 5, 7)
    labels = {a.ann_id: (a.label, a.category_id) for r in dataset.records for a in r.annotations}
    assert labels == {1: (1, 3), 2: (3, 7), 3: (0, 1), 4: (2, 5), 5: (1, 3), 6: (3, 7)}
    decoded = decode_instances(dataset, _record(dataset, 2))
    assert decoded["labels"].dtype == np.int32
    assert decoded["labels"].tolist() == [2, 1, 3]


def test_class_names_select_and_order(tiny_coco):
    with pytest.warns(UserWarning, match=r"instances.json: dropped 2 annotation\(s\) of categories the model "
                                         r"does not know \("):
        dataset = load_coco(tiny_coco.json_path, class_names=["dog", "cat"])
    assert dataset.class_names == ("dog", "cat")
    assert dataset.cat_ids == (7, 3)
    labels = {a.ann_id: a.label for r in dataset.records for a in r.annotations}
    assert labels == {1: 1, 2: 0, 5: 1, 6: 0}
    assert dataset.stats["other_category"] == 2
    assert dataset.stats["annotations"] == 4
    assert len(dataset.records) == 3


def test_unknown_class_name(tiny_coco):
    _expect_error(lambda: load_coco(tiny_coco.json_path, class_names=["dgo"]), "instances.json", "'dgo'", "'dog'")


def test_crowd_flag_and_negatives_kept(tiny_coco):
    dataset = load_coco(tiny_coco.json_path)
    assert [r.image_id for r in dataset.records] == [1, 2, 3]
    assert dataset.stats["negatives"] == 1
    assert dataset.stats["crowd"] == 1
    assert dataset.stats["annotations"] == 6
    decoded = decode_instances(dataset, _record(dataset, 1))
    assert decoded["iscrowd"].tolist() == [False, False, True]
    negative = decode_instances(dataset, _record(dataset, 3))
    assert negative["image"].shape == (72, 72, 3)
    assert negative["masks"].shape == (0, 72, 72)
    assert negative["labels"].shape == (0,) and negative["boxes"].shape == (0, 4)


def test_decoded_image_boxes_and_colours(tiny_coco):
    dataset = load_coco(tiny_coco.json_path)
    for record in dataset.records[:2]:
        decoded = decode_instances(dataset, record)
        image = decoded["image"]
        assert image.dtype == np.uint8 and image.shape == (record.height, record.width, 3)
        for mask, box, ann_id in zip(decoded["masks"], decoded["boxes"], decoded["ann_ids"]):
            rows, cols = np.nonzero(mask)
            np.testing.assert_array_equal(box, [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
            # RGB order: the painted colour is exactly under the mask.
            colour = np.asarray(COLOURS[int(ann_id)], np.uint8)
            np.testing.assert_array_equal(np.all(image == colour, axis=-1), mask.astype(bool))
    l_box = decode_instances(dataset, _record(dataset, 1))["boxes"][1]
    assert l_box.tolist() == [50.0, 10.0, 80.0, 50.0] == [min(L_SHAPE[::2]), min(L_SHAPE[1::2]), 80, 50]


def test_image_root_and_subfolder_names(tmp_path):
    tiny = write_tiny_coco(tmp_path / "ds", image_dir="imgs")
    moved = write_json(tmp_path / "elsewhere.json", tiny.data)
    dataset = load_coco(moved, image_root=tmp_path / "ds")
    assert dataset.records[0].path == os.path.join(str(tmp_path / "ds"), "imgs", "one.png")
    assert decode_instances(dataset, dataset.records[0])["image"].shape == (64, 96, 3)
    # Default root is the JSON's folder, where the images are not.
    default = load_coco(moved)
    _expect_error(lambda: decode_instances(default, default.records[0]), "elsewhere.json", "image 1", "one.png")


def test_out_of_image_polygon_and_box_are_clipped(tiny_coco):
    data = tiny_coco.data
    polygon = [80, 20, 110, 20, 110, 50, 80, 50]  # crosses the right edge (W = 96)
    data["annotations"].append(
        {"id": 10, "image_id": 1, "category_id": 3, "segmentation": [polygon], "bbox": [80, 20, 30, 30]}
    )
    data["annotations"].append(
        {"id": 11, "image_id": 1, "category_id": 3, "segmentation": [[200, 200, 220, 200, 210, 220]]}
    )
    path = write_json(tiny_coco.json_path, data)
    with pytest.warns(UserWarning, match="entirely outside"):
        dataset = load_coco(path, strict=True)  # clipping is not an error, even strict
    assert dataset.stats["clipped"] == 1  # kept annotations only; ann 11 is dropped
    assert dataset.stats["dropped_annotations"] == 1
    ann = next(a for a in _record(dataset, 1).annotations if a.ann_id == 10)
    assert ann.bbox == (80.0, 20.0, 16.0, 30.0)
    xs = ann.segmentation[0][::2]
    assert max(xs) == 96.0 and min(xs) == 80.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coco = COCO(path)
    decoded = decode_instances(dataset, _record(dataset, 1))
    mask = decoded["masks"][list(decoded["ann_ids"]).index(10)]
    np.testing.assert_array_equal(mask, coco.annToMask(coco.anns[10]))
    assert mask[:, 80:].all(axis=1)[20:50].all() and mask.sum() == 16 * 30


# ---------------------------------------------------------------------------
# Invalid polygons: skipped with a warning, an error under strict


@pytest.mark.parametrize(
    "polygon, problem",
    [([10, 10, 20, 10], "fewer than 3 points"), ([10, 10, 20, 10, 20, 20, 10], "odd coordinate count")],
)
def test_invalid_polygon_skipped_or_strict(tiny_coco, polygon, problem):
    data = tiny_coco.data
    data["annotations"][0]["segmentation"].append(polygon)  # ann 1 keeps its valid rectangle
    data["annotations"].append({"id": 20, "image_id": 2, "category_id": 3, "segmentation": [polygon]})
    path = write_json(tiny_coco.json_path, data)
    with pytest.warns(UserWarning, match=r"skipped 2 invalid polygon\(s\)") as record:
        dataset = load_coco(path)
    assert len(record) == 1
    assert dataset.stats["skipped_polygons"] == 2
    assert dataset.stats["dropped_annotations"] == 1  # ann 20 had nothing else
    ann_ids = {a.ann_id for r in dataset.records for a in r.annotations}
    assert 1 in ann_ids and 20 not in ann_ids
    _expect_error(lambda: load_coco(path, strict=True), "instances.json", "annotation 1", problem, "strict")


# ---------------------------------------------------------------------------
# Bad input: one-line SoloError naming the file


def _mutate(fn):
    def apply(data):
        fn(data)
        return data

    return apply


SHORT_COMPRESSED_COUNTS = compressed_rle(np.ones((80, 63)))["counts"]  # 80x63 pixels for an 80x64 image
BAD_JSON_CASES = {
    "missing_annotations_key": (_mutate(lambda d: d.pop("annotations")), ["'annotations'"]),
    "missing_categories_key": (_mutate(lambda d: d.pop("categories")), ["'categories'"]),
    "images_wrong_type": (_mutate(lambda d: d.update(images={"id": 1})), ["'images' must be a list"]),
    "top_level_list": (lambda d: [d], ["JSON object"]),
    "image_width_string": (
        _mutate(lambda d: d["images"][1].update(width="64")),
        ["image 2", "'width' must be an integer"],
    ),
    "image_missing_file_name": (_mutate(lambda d: d["images"][0].pop("file_name")), ["image 1", "'file_name'"]),
    "unknown_image": (
        _mutate(lambda d: d["annotations"][2].update(image_id=99)),
        ["annotation 3", "unknown image_id 99"],
    ),
    "unknown_category": (
        _mutate(lambda d: d["annotations"][1].update(category_id=4)),
        ["image 1", "annotation 2", "unknown category_id 4"],
    ),
    "duplicate_image_id": (_mutate(lambda d: d["images"][2].update(id=1)), ["image 1", "duplicate image id"]),
    "duplicate_category_id": (
        _mutate(lambda d: d["categories"][1].update(id=1)),
        ["category 1", "duplicate category id"],
    ),
    "no_images": (_mutate(lambda d: d.update(images=[], annotations=[])), ["no images"]),
    "parent_file_name": (
        _mutate(lambda d: d["images"][0].update(file_name="../../x.png")),
        ["image 1", "'../../x.png'", "escapes the image root"],
    ),
    "nested_parent_file_name": (
        _mutate(lambda d: d["images"][0].update(file_name="images/../../x.png")),
        ["image 1", "escapes the image root"],
    ),
    "absolute_file_name": (
        _mutate(lambda d: d["images"][0].update(file_name="/etc/passwd")),
        ["image 1", "escapes the image root"],
    ),
    "windows_file_name": (
        _mutate(lambda d: d["images"][0].update(file_name="C:\\data\\x.png")),
        ["image 1", "escapes the image root"],
    ),
    "segmentation_string": (
        _mutate(lambda d: d["annotations"][0].update(segmentation="polygon")),
        ["annotation 1", "'segmentation' must be"],
    ),
    "rle_wrong_size": (
        _mutate(lambda d: d["annotations"][2]["segmentation"].update(size=[64, 95])),
        ["annotation 3", "does not match the image"],
    ),
    "rle_uncompressed_short": (
        _mutate(lambda d: d["annotations"][5]["segmentation"]["counts"].pop()),
        ["annotation 6", "RLE covers"],
    ),
    "rle_compressed_short": (
        _mutate(lambda d: d["annotations"][3]["segmentation"].update(counts=SHORT_COMPRESSED_COUNTS)),
        ["annotation 4", "RLE covers 5040 pixels", "80x64"],
    ),
    "rle_compressed_cut": (
        _mutate(lambda d: d["annotations"][3]["segmentation"].update(counts="P13")),
        ["annotation 4", "RLE"],
    ),
    "iscrowd_invalid": (_mutate(lambda d: d["annotations"][0].update(iscrowd=2)), ["annotation 1", "'iscrowd'"]),
    "bbox_invalid": (_mutate(lambda d: d["annotations"][0].update(bbox=[1, 2, 3])), ["annotation 1", "'bbox'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON_CASES))
def test_bad_json_content(tiny_coco, case):
    mutate, needles = BAD_JSON_CASES[case]
    data = mutate(json.loads(json.dumps(tiny_coco.data)))
    path = write_json(tiny_coco.json_path, data)
    _expect_error(lambda: load_coco(path), "instances.json", *needles)


def test_missing_json_file(tmp_path):
    _expect_error(lambda: load_coco(tmp_path / "nope.json"), "nope.json", "file not found")


def test_not_json_and_truncated_json(tiny_coco, tmp_path):
    not_json = tmp_path / "notes.json"
    not_json.write_text("images: [1, 2]\n")
    _expect_error(lambda: load_coco(not_json), "notes.json", "not valid JSON", "line 1")
    text = open(tiny_coco.json_path).read()
    truncated = tmp_path / "cut.json"
    truncated.write_text(text[: len(text) // 2])
    _expect_error(lambda: load_coco(truncated), "cut.json", "not valid JSON", "truncated")


def test_missing_corrupt_and_truncated_images(tiny_coco):
    dataset = load_coco(tiny_coco.json_path)
    one, two, three = dataset.records
    os.remove(one.path)
    _expect_error(lambda: decode_instances(dataset, one), "instances.json", "image 1", "one.png", "not found")
    with open(two.path, "wb") as stream:
        stream.write(b"this is not a png")
    _expect_error(lambda: decode_instances(dataset, two), "image 2", "two.png", "corrupt or truncated")
    data = open(three.path, "rb").read()
    with open(three.path, "wb") as stream:
        stream.write(data[: len(data) // 2])
    _expect_error(lambda: decode_instances(dataset, three), "image 3", "empty.png", "corrupt or truncated")
    _expect_error(lambda: read_image(three.path), "empty.png")


def test_image_size_differs_from_json(tiny_coco):
    data = tiny_coco.data
    data["images"][2].update(width=70)
    path = write_json(tiny_coco.json_path, data)
    dataset = load_coco(path)
    needles = ("instances.json", "image 3", "empty.png", "72x72", "70x72")
    _expect_error(lambda: decode_instances(dataset, dataset.records[2]), *needles)


def test_boxes_from_masks_known_values():
    masks = np.zeros((3, 6, 8), np.uint8)
    masks[0, 1:3, 2:5] = 1
    masks[1, 5, 7] = 1
    boxes = transforms.boxes_from_masks(masks)
    np.testing.assert_array_equal(boxes, [[2, 1, 5, 3], [7, 5, 8, 6], [0, 0, 0, 0]])
    assert boxes.dtype == np.float32


def test_a_large_json_says_it_is_being_read(tiny_coco, monkeypatch, capsys):
    """Nothing was printed for about 40 s while a 222 MB JSON loaded."""
    from keras_solo.data import coco

    load_coco(tiny_coco.json_path)
    assert "reading" not in capsys.readouterr().err
    monkeypatch.setattr(coco, "LARGE_JSON_BYTES", 1)
    load_coco(tiny_coco.json_path)
    assert f"reading {tiny_coco.json_path} (0 MB) ..." in capsys.readouterr().err
