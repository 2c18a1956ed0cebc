"""Tests for keras_solo.data.transforms and keras_solo.data.pipeline."""

import dataclasses
import os
import warnings

import cv2
import numpy as np
import pytest
import tensorflow as tf
from helpers import COLOURS

from keras_solo.data import transforms
from keras_solo.data.coco import load_coco
from keras_solo.data.pipeline import (ExampleOptions, as_solo_error, build_dataset, load_example, new_epoch_variable,
                                     steps_per_epoch)
from keras_solo.errors import SoloError

SIZE = (128, 96)  # (W, H)
CAT, DOG, BIRD = 1, 3, 2  # contiguous labels of the tiny dataset


@pytest.fixture
def dataset(tiny_coco):
    return load_coco(tiny_coco.json_path)


def _batches(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), batch) for batch in ds]


def _by_image(batches):
    """{image_id: (image, targets)} from a list of numpy batches."""
    examples = {}
    for images, targets in batches:
        for b in range(len(images)):
            image_id = int(targets["image_info"][b, 3])
            examples[image_id] = (images[b], {k: v[b] for k, v in targets.items()})
    return examples


def _colour_region(image, colour, tolerance=40):
    return np.abs(image.astype(np.float32) - np.asarray(colour, np.float32)).max(axis=-1) <= tolerance


def _erode(mask):
    """3x3 erosion: pixels whose 8 neighbours are all in the mask."""
    return cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0).astype(bool)


def _assert_aligned(mask, region):
    """Every pure-colour pixel is in the mask; the mask's interior is pure colour."""
    mask = mask.astype(bool)
    assert region.sum() > 50
    assert not (region & ~mask).any()
    assert not (_erode(mask) & ~region).any()
    assert (mask & region).sum() / (mask | region).sum() > 0.75


# ---------------------------------------------------------------------------
# Batch layout


def test_layout_dtypes_static_shapes_and_padding(dataset):
    ds = build_dataset(dataset, image_size=SIZE, max_instances=8, batch_size=2, drop_remainder=True)
    images_spec, targets_spec = ds.element_spec
    assert images_spec.shape == (2, 96, 128, 3) and images_spec.dtype == tf.float32
    expected = {
        "masks": ((2, 8, 24, 32), tf.uint8),
        "classes": ((2, 8), tf.int32),
        "boxes": ((2, 8, 4), tf.float32),
        "ignore": ((2, 24, 32), tf.uint8),
        "image_info": ((2, 4), tf.float32),
    }
    assert {k: (tuple(v.shape), v.dtype) for k, v in targets_spec.items()} == expected
    (images, targets), = _batches(ds)  # 3 images, last partial batch dropped
    np.testing.assert_array_equal(targets["classes"], [[CAT, DOG, -1, -1, -1, -1, -1, -1], [BIRD, CAT, DOG] + [-1] * 5])
    assert not targets["masks"][0, 2:].any() and not targets["boxes"][0, 2:].any()
    assert targets["masks"][0, :2].any(axis=(1, 2)).all()
    assert images.min() >= 0 and images.max() <= 255


def test_eval_letterbox_values(dataset):
    ds = build_dataset(dataset, image_size=SIZE, max_instances=4, batch_size=3)
    assert len(ds) == 1
    examples = _by_image(_batches(ds))
    image, targets = examples[1]
    # 96x64 -> scale min(128/96, 96/64) = 4/3 -> 128x85, top-left, zero padding below.
    np.testing.assert_allclose(targets["image_info"], [64, 96, 4 / 3, 1], rtol=1e-6)
    assert not image[85:].any() and image[:85].max(axis=-1).min() > 0
    # The cat rectangle [8, 40) x [8, 30) lands at [10.7, 53.3) x [10.7, 40).
    np.testing.assert_allclose(targets["boxes"][0], [10.67, 10.67, 53.33, 40.0], atol=1.0)
    rows, cols = np.nonzero(targets["masks"][0])
    extent = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    np.testing.assert_allclose(extent, np.array([11, 11, 53, 40]) / 4, atol=1)
    # The crowd strip (rows 52-61, cols 4-39) is only in the ignore map.
    assert CAT in targets["classes"] and 0 not in targets["classes"]
    ys, xs = np.nonzero(targets["ignore"])
    assert ys.min() == int(52 * 4 / 3) // 4 and xs.max() == (int(40 * 4 / 3) - 1) // 4
    # The negative image: no instances, no ignore.
    image3, targets3 = examples[3]
    assert (targets3["classes"] == -1).all() and not targets3["masks"].any() and not targets3["ignore"].any()
    np.testing.assert_allclose(targets3["image_info"], [72, 72, 4 / 3, 3], rtol=1e-6)


def test_keeps_largest_instances_and_warns_once(dataset):
    message = r"1 image\(s\) have more than max_instances=2 instances \(up to 3\)"
    with pytest.warns(UserWarning, match=message) as record:
        ds = build_dataset(dataset, image_size=SIZE, max_instances=2, batch_size=3)
    assert len(record) == 1
    examples = _by_image(_batches(ds))
    # Image 2: dog (512 px) and bird (421 px) kept in annotation order, the cat (390 px) dropped.
    assert examples[2][1]["classes"].tolist() == [BIRD, DOG]
    assert examples[1][1]["classes"].tolist() == [CAT, DOG]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_dataset(dataset, image_size=SIZE, max_instances=3)


def test_boxes_equal_mask_extents(dataset):
    ds = build_dataset(dataset, image_size=SIZE, mask_stride=1, batch_size=3, training=True, photometric=False, seed=5)
    for images, targets in _batches(ds):
        for b in range(len(images)):
            count = int((targets["classes"][b] >= 0).sum())
            np.testing.assert_array_equal(targets["boxes"][b], transforms.boxes_from_masks(targets["masks"][b]))
            assert targets["masks"][b, :count].any(axis=(1, 2)).all()


def test_flip_and_jitter_keep_masks_on_their_pixels(dataset):
    ds = build_dataset(
        dataset,
        image_size=SIZE,
        mask_stride=1,
        batch_size=3,
        training=True,
        photometric=False,
        scale_jitter=(0.6, 1.6),
        seed=11,
    )
    orientations, scales = set(), set()
    for _ in range(6):  # each pass is a new epoch with new augmentation
        examples = _by_image(_batches(ds))
        for image_id, slot, ann_id in ((1, 1, 2), (2, 0, 4), (2, 2, 6)):
            image, targets = examples[image_id]
            assert targets["classes"][slot] == (DOG if ann_id != 4 else BIRD)
            _assert_aligned(targets["masks"][slot], _colour_region(image, COLOURS[ann_id]))
        image, targets = examples[1]
        _assert_aligned(targets["ignore"], _colour_region(image, COLOURS[3]))
        # The L's foot (bottom rows) sticks out right unless flipped.
        rows, cols = np.nonzero(_colour_region(image, COLOURS[2]))
        top = cols[rows < np.percentile(rows, 30)].mean()
        bottom = cols[rows > np.percentile(rows, 85)].mean()
        orientations.add(bool(bottom > top))
        scales.add(round(float(targets["image_info"][2]), 3))
    assert orientations == {True, False}
    assert len(scales) > 3 and max(scales) > 4 / 3  # some crops, some padding


def test_deterministic_given_seed(dataset):
    def run(seed):
        ds = build_dataset(dataset, image_size=SIZE, batch_size=2, training=True, seed=seed, num_parallel_calls=3)
        return _batches(ds) + _batches(ds)  # two epochs

    first, again, other = run(7), run(7), run(8)
    assert len(first) == 2  # training drops the partial batch: 2 epochs x 1 batch
    for a, b in zip(first, again):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    # Different epochs of one build differ.
    assert not np.array_equal(first[0][0], first[1][0])


def test_load_example_matches_dataset_and_eval_ignores_epoch(dataset):
    ds = build_dataset(dataset, image_size=SIZE, batch_size=1)
    (images, targets), = _batches(ds.take(1))
    image, example = load_example(dataset, 0, ExampleOptions(image_size=SIZE, seed=99), epoch=5)
    np.testing.assert_array_equal(images[0], image.astype(np.float32))
    for key, value in example.items():
        np.testing.assert_array_equal(targets[key][0], value)


def test_pydataset_gives_the_tf_data_examples(dataset):
    """The loader for backends without TensorFlow: in training the same examples per pass (each
    image with that pass's augmentation; the order within a pass is drawn differently), passes
    back to back; in evaluation the same batches in order, the last one partial."""
    from keras_solo.data.loader import SoloPyDataset

    def passes(batches):
        """[{image_id: (image, targets)} of pass 0, ... of pass 1]: 3 images, so 3 elements a pass."""
        examples = [(int(targets["image_info"][b, 3]), (images[b], {k: v[b] for k, v in targets.items()}))
                    for images, targets in batches for b in range(len(images))]
        return [dict(examples[:3]), dict(examples[3:6])]

    options = ExampleOptions(image_size=SIZE, seed=5, scale_jitter=(0.7, 1.3), max_instances=8)
    ds = build_dataset(dataset, batch_size=2, training=True, repeat=True, **dataclasses.asdict(options))
    loader = SoloPyDataset(dataset, options, batch_size=2, training=True, steps=3)
    expected, actual = passes(_batches(ds.take(3))), passes([loader[index] for index in range(3)])
    for want, got in zip(expected, actual):
        assert sorted(got) == sorted(want) == [1, 2, 3]
        for image_id in want:
            tf.nest.map_structure(np.testing.assert_array_equal, got[image_id], want[image_id])
    assert not np.array_equal(actual[0][1][0], actual[1][1][0])  # another pass, another augmentation
    evaluation = SoloPyDataset(dataset, batch_size=2, training=False, image_size=SIZE)
    expected = _batches(build_dataset(dataset, batch_size=2, image_size=SIZE))
    assert len(evaluation) == len(expected) == 2
    for index, batch in enumerate(expected):
        tf.nest.map_structure(np.testing.assert_array_equal, evaluation[index], batch)


def test_repeat_and_steps_per_epoch(dataset):
    assert steps_per_epoch(dataset, 2) == 2
    assert steps_per_epoch(dataset, 2, drop_remainder=True) == 1
    assert steps_per_epoch(7, 3) == 3
    ds = build_dataset(dataset, image_size=SIZE, batch_size=2, training=True, repeat=True)
    assert ds.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    ids = np.concatenate([t["image_info"][:, 3] for _, t in _batches(ds.take(3))])
    # Epochs follow each other without a gap; each is a permutation of the images.
    assert sorted(ids[:3].tolist()) == [1, 2, 3] and sorted(ids[3:].tolist()) == [1, 2, 3]
    assert len(build_dataset(dataset, image_size=SIZE, batch_size=2)) == steps_per_epoch(dataset, 2)


def test_epoch_variable_starts_at_a_later_pass(dataset):
    """A resumed run (epoch variable at 2) gets pass 2's order and augmentation, not pass 0's."""
    fresh = build_dataset(dataset, image_size=SIZE, batch_size=3, training=True, repeat=True)
    passes = [(images.numpy(), t["image_info"].numpy()) for images, t in fresh.take(3)]  # 3 images = 1 batch
    resumed = build_dataset(dataset, image_size=SIZE, batch_size=3, training=True, repeat=True,
                            epoch_variable=new_epoch_variable(2))
    images, targets = next(iter(resumed))
    np.testing.assert_array_equal(targets["image_info"].numpy(), passes[2][1])
    np.testing.assert_array_equal(images.numpy(), passes[2][0])
    assert not np.array_equal(images.numpy(), passes[0][0])


def test_unreadable_image_while_iterating(dataset):
    os.remove(dataset.records[1].path)
    ds = build_dataset(dataset, image_size=SIZE, batch_size=3)
    with pytest.raises(tf.errors.OpError) as info:
        _batches(ds)
    error = as_solo_error(info.value)
    assert isinstance(error, SoloError)
    assert str(error).startswith(dataset.json_path + ": image 2: image file not found")
    assert str(error).endswith("two.png") and "\n" not in str(error)
    assert as_solo_error(ValueError("other")) is None


@pytest.mark.parametrize(
    "kwargs, needles",
    [
        (dict(image_size=(100, 64)), ["100", "size_divisor 32"]),
        (dict(image_size=(128, 80)), ["80", "size_divisor 32"]),
        (dict(image_size=(64, 64), size_divisor=16, mask_stride=5), ["mask_stride 5"]),
        (dict(max_instances=0), ["max_instances"]),
        (dict(scale_jitter=(1.2, 0.8)), ["scale_jitter"]),
        (dict(seed=-1), ["seed"]),
    ],
)
def test_bad_arguments(dataset, kwargs, needles):
    with pytest.raises(SoloError) as info:
        build_dataset(dataset, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


# ---------------------------------------------------------------------------
# transforms


def test_letterbox_crop_offset_moves_image_and_masks_together():
    image = np.zeros((40, 40, 3), np.uint8)
    image[0:10, 30:40] = 200  # top-right block
    masks = (image[None, ..., 0] > 0).astype(np.uint8)
    block = np.zeros((64, 64), bool)
    block[0:16, 48:64] = True  # where the block lands in the 64x64 resized image
    for offset, (left, top) in (((0.0, 0.0), (0, 0)), ((1.0, 1.0), (32, 32)), ((0.5, 0.25), (16, 8))):
        out, out_masks, scale = transforms.letterbox(image, masks, (32, 32), scale_jitter=2.0, offset=offset)
        assert scale == 1.6 and out.shape == (32, 32, 3) and out_masks.shape == (1, 32, 32)
        assert transforms.crop_offset((64, 64), (32, 32), offset) == (left, top)
        np.testing.assert_array_equal(out_masks[0].astype(bool), block[top : top + 32, left : left + 32])
        np.testing.assert_array_equal(out[..., 0] > 100, out_masks[0].astype(bool))
    # No overflow: the offset is ignored and the image is padded bottom/right.
    out, out_masks, scale = transforms.letterbox(image, masks, (32, 32), scale_jitter=0.5, offset=(1.0, 1.0))
    assert scale == 0.4 and not out[16:].any() and not out[:, 16:].any()
    np.testing.assert_array_equal(out_masks[0, :4, 12:16], 1)
    assert out_masks.sum() == 16


def test_hflip_and_downsample_and_photometric():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    masks = np.array([[[1, 0, 0], [1, 1, 0]]], np.uint8)
    flipped, flipped_masks = transforms.hflip(image, masks)
    np.testing.assert_array_equal(flipped[:, 0], image[:, 2])
    np.testing.assert_array_equal(flipped_masks, [[[0, 0, 1], [0, 1, 1]]])

    small = np.zeros((3, 8, 8), np.uint8)
    small[0, :4, :4] = 1  # a full cell
    small[1, 5, 6] = 1  # one pixel: kept through the any-pixel fallback
    small[2, 0:3, 4:8] = 1  # 12 of 16 pixels of cell (0, 1)
    down = transforms.downsample_masks(small, 4)
    np.testing.assert_array_equal(down, [[[1, 0], [0, 0]], [[0, 0], [0, 1]], [[0, 1], [0, 0]]])

    picture = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    a = transforms.photometric(picture, np.random.default_rng(1))
    b = transforms.photometric(picture, np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.shape == picture.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, picture)


def _photometric_per_pixel(image, rng, *, brightness=0.25, contrast=0.25, saturation=0.3, hue=0.02):
    """The jitter as a float32 pass over every pixel (the code before the lookup tables)."""
    gain_b = rng.uniform(1.0 - brightness, 1.0 + brightness)
    gain_c = rng.uniform(1.0 - contrast, 1.0 + contrast)
    gain_s = rng.uniform(1.0 - saturation, 1.0 + saturation)
    shift_h = rng.uniform(-hue, hue) * 180.0
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = np.mod(hsv[..., 0] + shift_h, 180.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * gain_s, 0.0, 255.0)
    rgb = cv2.cvtColor(np.round(hsv).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    mean = rgb.mean()
    rgb = ((rgb - mean) * gain_c + mean) * gain_b
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def test_photometric_tables_give_the_per_pixel_result():
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    canvas[40:, 60:] = canvas[40:, 60:] // 64 * 64  # flat areas: many pixels on the same values
    for seed in range(60):
        height, width = rng.integers(1, 96), rng.integers(1, 160)
        image = canvas[:height, :width]  # a strided view, as load_example passes it
        options = dict(brightness=0.9, contrast=0.9, saturation=0.9, hue=0.5) if seed % 3 == 0 else {}
        np.testing.assert_array_equal(transforms.photometric(image, np.random.default_rng(seed), **options),
                                      _photometric_per_pixel(image, np.random.default_rng(seed), **options))


def test_example_options_are_checked_once_and_normalised():
    """One options object: its checks run when it is made (a replace checks again), values come out
    as plain tuples, ints and bools, and passing something else is one line."""
    options = ExampleOptions(image_size=[256, 128], scale_jitter=[0.5, 2], seed=np.int64(3))
    assert options.image_size == (256, 128) and options.scale_jitter == (0.5, 2.0) and type(options.seed) is int
    assert ExampleOptions(scale_jitter=None).scale_jitter is None
    with pytest.raises(SoloError, match="mask_stride 8"):
        options.replace(image_size=(260, 128), size_divisor=4, mask_stride=8)
    with pytest.raises(SoloError, match="options must be an ExampleOptions, got dict"):
        build_dataset(None, {"image_size": SIZE})
