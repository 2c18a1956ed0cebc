"""Simple copy-paste augmentation (data.copy_paste, Ghiasi et al. 2021) in `load_example`."""

import cv2
import numpy as np
import pytest
from helpers import COLOURS

from keras_solo import builders
from keras_solo.config import load_config
from keras_solo.data import examples
from keras_solo.data.coco import load_coco
from keras_solo.data.examples import COPY_PASTE_MIN_PIXELS, ExampleOptions, load_example
from keras_solo.errors import SoloError

SIZE = (128, 96)  # (W, H)
NON_CROWD = {ann_id: COLOURS[ann_id] for ann_id in (1, 2, 4, 5, 6)}  # ann 3 is the crowd strip


@pytest.fixture
def dataset(tiny_coco):
    return load_coco(tiny_coco.json_path)


def _options(**changes):
    base = dict(image_size=SIZE, mask_stride=1, max_instances=8, photometric=False, scale_jitter=(0.7, 1.4))
    return ExampleOptions(**{**base, **changes})


def _source(dataset, index, options, epoch):
    """What load_example pastes on ``index``: its paste stream after the coin flip, as `_paste_source` draws."""
    rng = np.random.default_rng([options.seed, epoch, index, examples._COPY_PASTE_STREAM])
    assert rng.random() < options.copy_paste
    return examples._paste_source(dataset, index, options, rng)


def _assert_equal(a, b):
    assert a[0].dtype == b[0].dtype and np.array_equal(a[0], b[0])
    assert sorted(a[1]) == sorted(b[1])
    for key in a[1]:
        assert a[1][key].dtype == b[1][key].dtype and np.array_equal(a[1][key], b[1][key]), key


def test_pasted_instances_and_pixels_come_from_another_record(dataset):
    """copy_paste=1: the image under the pasted masks is the other record's (augmented) image, elsewhere
    the example without copy-paste; the image's own instances lose the covered pixels (dropped below
    COPY_PASTE_MIN_PIXELS), the pasted ones follow; the ignore map loses the covered pixels too."""
    changed = pasted = 0
    for seed in range(8):
        for index in range(3):
            options = _options(seed=seed, copy_paste=1.0)
            plain_image, plain = load_example(dataset, index, options.replace(copy_paste=0.0), training=True, epoch=1)
            image, targets = load_example(dataset, index, options, training=True, epoch=1)
            source = _source(dataset, index, options, epoch=1)
            if source is None:  # the other record is the empty image: nothing to paste
                _assert_equal((image, targets), (plain_image, plain))
                continue
            paste_image, paste_masks, paste_labels = source
            assert len(paste_masks) >= 1
            pasted += 1
            covered = paste_masks.any(axis=0)
            np.testing.assert_array_equal(image[covered], paste_image[covered])
            np.testing.assert_array_equal(image[~covered], plain_image[~covered])
            assert not np.array_equal(image, plain_image)
            # The pasted pixels are painted instances of the other record (photometric off): the
            # interior of each pasted mask is one pure non-crowd colour of the tiny set, never
            # one of this record's own (each colour belongs to one annotation).
            own = {1: (1, 2), 2: (4, 5, 6), 3: ()}[dataset.records[index].image_id]
            others = np.array([c for ann_id, c in NON_CROWD.items() if ann_id not in own], np.float32)
            for mask in paste_masks:
                inner = cv2.erode(mask, np.ones((3, 3), np.uint8), borderValue=0).astype(bool)
                if inner.sum() < 10:
                    continue
                colour = np.median(image[inner].astype(np.float32), axis=0)
                assert np.abs(others - colour).max(axis=1).min() <= 10, colour
            # Targets: occluded own instances, then the pasted ones.
            count = int((plain["classes"] >= 0).sum())
            kept_masks, kept_classes = [], []
            for mask, cls in zip(plain["masks"][:count], plain["classes"][:count]):
                visible = mask.astype(bool) & ~covered
                if visible.sum() >= COPY_PASTE_MIN_PIXELS or not (mask.astype(bool) & covered).any():
                    kept_masks.append(visible)
                    kept_classes.append(cls)
            want_masks = kept_masks + [m.astype(bool) for m in paste_masks]
            want_classes = kept_classes + list(paste_labels)
            got = int((targets["classes"] >= 0).sum())
            assert targets["classes"][:got].tolist() == want_classes
            np.testing.assert_array_equal(targets["masks"][:got].astype(bool), np.stack(want_masks))
            assert not targets["masks"][got:].any()
            np.testing.assert_array_equal(targets["ignore"].astype(bool), plain["ignore"].astype(bool) & ~covered)
            np.testing.assert_array_equal(targets["image_info"], plain["image_info"])
            changed += sorted(want_classes) != sorted(plain["classes"][:count].tolist())
    assert pasted >= 12 and changed >= pasted - 2, (pasted, changed)  # the classes change in most examples


def test_occlusion_drops_covered_instances_and_cuts_partly_covered_ones():
    height, width = 16, 24
    image = np.full((height, width, 3), 10, np.uint8)
    masks = np.zeros((5, height, width), np.uint8)
    masks[0, 0:4, 0:4] = 1  # 16 px, fully covered: dropped
    masks[1, 0:8, 4:12] = 1  # 64 px, 32 covered: keeps 32 (>= 20)
    masks[2, 8:13, 0:5] = 1  # 25 px, 10 covered: 15 left (< 20), dropped
    masks[3, 12:16, 12:24] = 1  # crowd, 36 of 48 covered: keeps the 12 left (no size limit)
    masks[4, 14:16, 0:2] = 1  # 4 px, untouched: kept although small
    labels = np.array([1, 2, 3, 0, 4], np.int32)
    iscrowd = np.array([False, False, False, True, False])
    paste = np.zeros((2, height, width), np.uint8)
    paste[0, 0:4, 0:12] = 1
    paste[1, 8:10, 0:5] = 1
    paste[1, 12:15, 12:24] = 1
    paste_image = np.full((height, width, 3), 200, np.uint8)
    before = masks.copy()
    out_image, out_masks, out_labels, out_crowd = examples._paste(
        image, masks, labels, iscrowd, paste_image, paste, np.array([7, 8], np.int32))
    covered = paste.any(axis=0)
    assert (out_image[covered] == 200).all() and (out_image[~covered] == 10).all()
    assert out_labels.tolist() == [2, 0, 4, 7, 8] and out_labels.dtype == np.int32
    assert out_crowd.tolist() == [False, True, False, False, False]
    np.testing.assert_array_equal(out_masks[0], before[1] & ~covered)
    assert out_masks[0].sum() == 32
    np.testing.assert_array_equal(out_masks[1], before[3] & ~covered)
    assert out_masks[1].sum() == 12
    np.testing.assert_array_equal(out_masks[2], before[4])
    np.testing.assert_array_equal(out_masks[3:], paste)
    assert COPY_PASTE_MIN_PIXELS == 20


def test_off_is_todays_example_and_on_leaves_the_images_own_augmentation(dataset):
    """copy_paste=0 draws nothing more (the defaults' example, bitwise); the paste uses its own random
    stream, so where nothing is pasted the image is the one without copy-paste."""
    for seed in (0, 3):
        for index in range(3):
            for epoch in (0, 2):
                options = ExampleOptions(image_size=SIZE, seed=seed)
                _assert_equal(load_example(dataset, index, options, training=True, epoch=epoch),
                              load_example(dataset, index, options.replace(copy_paste=0.0), training=True,
                                           epoch=epoch))
    assert ExampleOptions().copy_paste == 0.0


def test_validation_never_pastes(dataset):
    from keras_solo.data.loader import SoloPyDataset

    for index in range(3):
        _assert_equal(load_example(dataset, index, _options(copy_paste=1.0), epoch=3),
                      load_example(dataset, index, _options(), epoch=3))
    evaluation = SoloPyDataset(dataset, _options(copy_paste=1.0), batch_size=3, training=False)
    plain = SoloPyDataset(dataset, _options(), batch_size=3, training=False)
    for a, b in zip(evaluation[0][1].values(), plain[0][1].values()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(evaluation[0][0], plain[0][0])


def test_probability_and_determinism(dataset):
    """copy_paste=0.5 pastes on some examples and not others, the same ones for the same seed."""
    def run(seed):
        return [load_example(dataset, index, _options(seed=seed, copy_paste=0.5), training=True, epoch=epoch)
                for epoch in range(6) for index in range(3)]

    plain = [load_example(dataset, index, _options(seed=4), training=True, epoch=epoch)
             for epoch in range(6) for index in range(3)]
    first, again = run(4), run(4)
    for a, b in zip(first, again):
        _assert_equal(a, b)
    pasted = [not np.array_equal(a[0], b[0]) for a, b in zip(first, plain)]
    assert 3 <= sum(pasted) <= 15


def test_config_option_is_checked_and_reaches_the_examples():
    config = load_config(None, ["data.copy_paste=0.5"])
    assert config.data.copy_paste == 0.5 and builders.example_options(config).copy_paste == 0.5
    assert load_config(None, []).data.copy_paste == 0.0
    with pytest.raises(SoloError) as info:
        load_config(None, ["data.copy_paste=1.5"])
    assert "data.copy_paste" in str(info.value) and "[0, 1]" in str(info.value) and "\n" not in str(info.value)
    for bad in (1.5, -0.1, True, "0.5"):
        with pytest.raises(SoloError, match="copy_paste must be a probability in"):
            ExampleOptions(copy_paste=bad)
    assert ExampleOptions(copy_paste=1).copy_paste == 1.0 and type(ExampleOptions(copy_paste=1).copy_paste) is float
