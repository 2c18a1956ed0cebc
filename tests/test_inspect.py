"""Tests for keras_solo.data.inspect: counts, overlays, the text report."""

import json

import cv2
import numpy as np
import pytest

from keras_solo.data.inspect import area_bucket, format_report, inspect_data
from keras_solo.data.synthetic import CLASS_NAMES, make_synthetic
from keras_solo.errors import SoloError


def _rect(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


@pytest.fixture
def hand_made(tmp_path):
    """Three 120x100 images: 3 instances + 1 crowd; crowd only; nothing."""
    for name in ("a", "b", "c"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), np.full((100, 120, 3), 90, np.uint8))
    anns = [
        # image 1: a small person (100 px), a medium person (40*50 = 2000), a large car (100*96)
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": _rect(0, 0, 10, 10), "area": 100, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": _rect(20, 0, 40, 50), "area": 2000, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 3, "segmentation": _rect(0, 0, 100, 96), "iscrowd": 0},  # no area
        {"id": 4, "image_id": 1, "category_id": 1, "segmentation": _rect(60, 60, 10, 10), "area": 100, "iscrowd": 1},
        # image 2: crowd only -> a negative
        {"id": 5, "image_id": 2, "category_id": 3, "segmentation": _rect(5, 5, 20, 20), "area": 400, "iscrowd": 1},
    ]
    data = {
        "images": [{"id": i, "file_name": f"{n}.png", "width": 120, "height": 100} for i, n in enumerate("abc", 1)],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_area_bucket_edges():
    assert [area_bucket(a) for a in (0, 1023, 1024, 9215, 9216)] == ["small", "small", "medium", "medium", "large"]


def test_counts_on_hand_made_file(hand_made):
    stats = inspect_data(hand_made)
    assert stats["images"] == 3
    assert stats["instances"] == 3 and stats["crowd"] == 2
    assert stats["negatives"] == 2
    assert stats["per_class"] == {
        "person": {"instances": 2, "crowd": 1, "images": 1, "small": 1, "medium": 1, "large": 0},
        "car": {"instances": 1, "crowd": 1, "images": 2, "small": 0, "medium": 0, "large": 1},
    }
    assert stats["area"] == {"small": 1, "medium": 1, "large": 1}
    assert stats["per_image"] == {"min": 0, "mean": 1.0, "max": 3, "histogram": {0: 2, 3: 1}}
    assert stats["overlays"] == []


def test_overlays_are_written(hand_made, tmp_path):
    out = tmp_path / "overlays"
    stats = inspect_data(hand_made, out_dir=out, num_overlays=4)
    # Only image 1 has instances, so one overlay.
    assert stats["overlays"] == [str(out / "overlay_000001.png")]
    overlay = cv2.imread(stats["overlays"][0])
    assert overlay.shape == (100, 120, 3)
    plain = np.full((100, 120, 3), 90, np.uint8)
    assert np.abs(overlay[40:50, 80:95].astype(int) - plain[40:50, 80:95]).max() > 20  # the car's mask
    assert (overlay[98:, 110:] == plain[98:, 110:]).all()  # outside every mask


def test_report_table(hand_made):
    report = format_report(inspect_data(hand_made))
    lines = report.splitlines()
    assert lines[0].endswith("3 images, 3 instances, 2 crowd, 2 negatives")
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:6]}
    assert rows["person"] == ["2", "1", "1", "1", "1", "0"]
    assert rows["car"] == ["1", "1", "2", "0", "0", "1"]
    assert lines[-2] == "instances per image: min 0, mean 1.00, max 3"
    assert lines[-1] == "histogram (instances: images): 0:2  3:1"
    total = next(line for line in lines if line.startswith("total")).split()[1:]
    assert total == ["3", "2", "1", "1", "1", "1"]


def test_counts_match_the_generator(tmp_path):
    result = make_synthetic(tmp_path / "syn", images=8, seed=2, val_fraction=0.0, empty_fraction=0.25)
    generated = result["stats"]["train"]
    stats = inspect_data(result["paths"]["train"], out_dir=tmp_path / "ov", num_overlays=2)
    assert {name: row["instances"] for name, row in stats["per_class"].items()} == generated["per_class"]
    assert stats["area"] == generated["area"]
    assert stats["negatives"] == generated["empty_images"] == 2
    assert stats["instances"] == generated["instances"]
    assert stats["per_image"]["max"] == generated["max_per_image"]
    assert len(stats["overlays"]) == 2
    assert list(stats["per_class"]) == list(CLASS_NAMES)
    assert "person" in format_report(stats)


def test_bad_file_is_a_solo_error(tmp_path):
    with pytest.raises(SoloError, match="missing.json"):
        inspect_data(tmp_path / "missing.json")
