"""COCO records -> batched ``tf.data`` input for SOLO training and evaluation.

One element is built in numpy by :func:`load_example` (read, rasterise,
augment, letterbox, pad) and wrapped in ``tf.numpy_function`` by
:func:`build_dataset`, which adds ordering, parallelism, batching and
prefetching. The batch layout is the data -> model contract of
``docs/DESIGN.md``:

| key | dtype | shape |
|---|---|---|
| images | float32 | (B, H, W, 3), RGB 0..255 |
| targets["masks"] | uint8 | (B, M, H/ms, W/ms) |
| targets["classes"] | int32 | (B, M), -1 = padding |
| targets["boxes"] | float32 | (B, M, 4), x1 y1 x2 y2 input pixels |
| targets["ignore"] | uint8 | (B, H/ms, W/ms), union of crowd regions |
| targets["image_info"] | float32 | (B, 4): orig_h, orig_w, scale, image_id (float32: exact below 2^24; evaluation takes ids from the records) |

Determinism: each element draws its randomness from
``numpy.random.default_rng([seed, epoch, index])`` and the shuffle order of an
epoch from a stateless op seeded with ``(seed, epoch)``; the parallel map keeps
order (``deterministic=True``). Two datasets built with the same arguments
therefore yield identical batches. ``epoch`` counts the passes over the data:
with ``repeat=True`` each repetition, otherwise each new iterator (as Keras
``fit`` makes one per epoch), so augmentations differ between epochs.
A resumed run starts at its epoch's pass (``epoch_variable``); the pass
number follows the training epoch only approximately (a batch may straddle
two passes), so a resumed run is a fresh continuation, not a bit-identical
replay of an uninterrupted one.

To time the pipeline, iterate the dataset (``for batch in ds.take(n)``) or
call :func:`load_example` directly for the per-image numpy cost.
"""

import gc
import math
import re
import warnings

import numpy as np
import tensorflow as tf

from keras_solo.data import transforms
from keras_solo.data.coco import check_image_files, decode_instances
from keras_solo.errors import SoloError, where

__all__ = ["as_solo_error", "build_dataset", "call_with_data_errors", "load_example", "release_pipelines",
           "steps_per_epoch"]


def load_example(
    dataset,
    index,
    *,
    image_size,
    max_instances=64,
    mask_stride=4,
    training=False,
    flip=True,
    scale_jitter=(0.8, 1.2),
    photometric=True,
    seed=0,
    epoch=0,
):
    """Builds one letterboxed, augmented, padded example in numpy.

    Order: letterbox with scale jitter and a random crop of any overflow,
    then horizontal flip and photometric jitter of the image's part of the
    canvas. Masks and the crowd
    ignore map go through exactly the image's geometry; instances whose mask
    is empty afterwards are dropped; boxes are the masks' extents. With more
    than ``max_instances`` instances the largest (by mask area) are kept.
    Augmentation happens only when ``training``.

    Args:
        dataset: a :class:`keras_solo.data.coco.CocoDataset`.
        index: record index in ``dataset.records``.
        image_size: output ``(W, H)``; multiples of ``mask_stride``.
        max_instances: M, instance slots per image. Defaults to 64.
        mask_stride: target mask stride ms. Defaults to 4.
        training: apply augmentation. Defaults to False.
        flip: random horizontal flip (p = 0.5) when training. Defaults to True.
        scale_jitter: ``(low, high)`` range of the letterbox scale multiplier
            when training, or None. Defaults to (0.8, 1.2).
        photometric: colour jitter when training. Defaults to True.
        seed: non-negative int. Defaults to 0.
        epoch: pass over the data, part of the RNG seed. Defaults to 0.

    Returns:
        ``(image, targets)``: uint8 (H, W, 3) and a dict of numpy arrays with
        the per-image shapes of the module table (``masks`` (M, H/ms, W/ms),
        ``classes`` (M,), ``boxes`` (M, 4), ``ignore`` (H/ms, W/ms),
        ``image_info`` (4,)).

    Raises:
        SoloError: the image cannot be read or does not match the JSON.
    """
    record = dataset.records[index]
    rng = np.random.default_rng([int(seed), int(epoch), int(index)])
    # Draw every random number in a fixed order so turning one augmentation
    # off leaves the others unchanged.
    do_flip = rng.random() < 0.5
    low, high = scale_jitter if scale_jitter else (1.0, 1.0)
    jitter = rng.uniform(low, high)
    offset = rng.random(2)

    decoded = decode_instances(dataset, record)
    image, masks = decoded["image"], decoded["masks"]
    orig_h, orig_w = image.shape[:2]
    if not training or not scale_jitter:
        jitter = 1.0
    if not training:
        offset = (0.0, 0.0)
    image, masks, scale = transforms.letterbox(image, masks, image_size, jitter, offset)
    if training:
        # Flip and colour act on the image's part of the canvas, after the
        # resize: the same augmentations as on the original, at a tenth of
        # the pixels (a flip of the crop is the crop of the flip at the
        # mirrored offset, which is as likely).
        keep_w, keep_h = transforms.letterbox_window((orig_h, orig_w), image_size, scale, offset)[2]
        if flip and do_flip:
            image[:keep_h, :keep_w], masks[:, :keep_h, :keep_w] = transforms.hflip(
                image[:keep_h, :keep_w], masks[:, :keep_h, :keep_w])
        if photometric:
            image[:keep_h, :keep_w] = transforms.photometric(image[:keep_h, :keep_w], rng)

    labels, iscrowd = decoded["labels"], decoded["iscrowd"]
    visible = masks.any(axis=(1, 2))
    masks, labels, iscrowd = masks[visible], labels[visible], iscrowd[visible]

    width, height = int(image_size[0]), int(image_size[1])
    crowd = np.zeros((height, width), np.uint8)
    if iscrowd.any():
        crowd = masks[iscrowd].max(axis=0)
    ignore = transforms.any_downsample(crowd, mask_stride)

    masks, labels = masks[~iscrowd], labels[~iscrowd]
    if len(masks) > max_instances:
        areas = masks.sum(axis=(1, 2), dtype=np.int64)
        largest = np.sort(np.argsort(-areas, kind="stable")[:max_instances])
        masks, labels = masks[largest], labels[largest]

    count = len(masks)
    small_h, small_w = height // mask_stride, width // mask_stride
    padded_masks = np.zeros((max_instances, small_h, small_w), np.uint8)
    padded_masks[:count] = transforms.downsample_masks(masks, mask_stride)
    classes = np.full((max_instances,), -1, np.int32)
    classes[:count] = labels
    boxes = np.zeros((max_instances, 4), np.float32)
    boxes[:count] = transforms.boxes_from_masks(masks)
    image_info = np.asarray([orig_h, orig_w, scale, record.image_id], np.float32)
    targets = {
        "masks": padded_masks,
        "classes": classes,
        "boxes": boxes,
        "ignore": ignore,
        "image_info": image_info,
    }
    return image, targets


def new_epoch_variable(start=0):
    """A pass counter for `build_dataset(epoch_variable=...)`, on the host."""
    with tf.device("/cpu:0"):  # tf.data functions run on the host
        return tf.Variable(int(start), dtype=tf.int64, trainable=False, name="data_epoch")


def build_dataset(
    dataset,
    *,
    image_size=(640, 640),
    size_divisor=32,
    max_instances=64,
    mask_stride=4,
    batch_size=2,
    training=False,
    flip=True,
    scale_jitter=(0.8, 1.2),
    photometric=True,
    seed=0,
    shuffle=None,
    repeat=False,
    drop_remainder=None,
    num_parallel_calls=tf.data.AUTOTUNE,
    check_images=None,
    epoch_variable=None,
):
    """Builds the ``tf.data`` input pipeline.

    Args:
        dataset: a :class:`keras_solo.data.coco.CocoDataset`.
        image_size: input ``(W, H)``, multiples of ``size_divisor``. Defaults
            to (640, 640).
        size_divisor: the network's largest stride. Defaults to 32.
        max_instances: M, instance slots per image; images with more keep the
            M largest (one warning with the count). Defaults to 64.
        mask_stride: ms, target mask stride; divides ``W`` and ``H``.
            Defaults to 4.
        batch_size: images per batch. Defaults to 2.
        training: enables augmentation (flip, scale jitter, photometric).
            Defaults to False.
        flip: random horizontal flip when training. Defaults to True.
        scale_jitter: ``(low, high)`` letterbox scale multiplier range when
            training, or None. Defaults to (0.8, 1.2).
        photometric: colour jitter when training. Defaults to True.
        seed: non-negative int; fixes shuffle order and augmentation.
            Defaults to 0.
        shuffle: shuffle each epoch. Defaults to None (= ``training``).
        repeat: repeat forever. Defaults to False.
        drop_remainder: drop the last partial batch (gives a static batch
            dimension). Defaults to None (= ``training``).
        num_parallel_calls: parallel element loads. Defaults to
            ``tf.data.AUTOTUNE``.
        check_images: check every image file up front
            (:func:`keras_solo.data.coco.check_image_files`: exists, not
            truncated, size as in the JSON) so a bad file fails here and not
            inside ``model.fit``. Defaults to None (= ``training``).
        epoch_variable: a scalar int64 ``tf.Variable`` holding the number of
            the next pass (read when a pass starts, then incremented); a
            resumed training run sets it to its first epoch so it does not
            replay pass 0's order and augmentation. Defaults to None (a new
            variable starting at 0).

    Returns:
        A ``tf.data.Dataset`` of ``(images, targets)`` as in the module
        table, with static shapes (the batch dimension is static when
        ``drop_remainder``).

    Raises:
        SoloError: an argument value is invalid (e.g. ``image_size`` not a
            multiple of ``size_divisor``) or the dataset has no images;
            with ``check_images``, the first bad image file. An image that
            cannot be decoded surfaces while iterating, as a
            ``tf.errors.OpError`` that :func:`as_solo_error` turns back into
            the one-line :class:`SoloError` naming the file (any exception
            inside the element loader is re-raised as a SoloError first).
    """
    width, height = _check_args(
        dataset, image_size, size_divisor, max_instances, mask_stride, batch_size, scale_jitter, seed
    )
    check_images = training if check_images is None else bool(check_images)
    if check_images:
        check_image_files(dataset)
    shuffle = training if shuffle is None else bool(shuffle)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)
    _warn_if_truncated(dataset, max_instances)

    num_images = len(dataset.records)
    small_h, small_w = height // mask_stride, width // mask_stride
    options = dict(
        image_size=(width, height),
        max_instances=max_instances,
        mask_stride=mask_stride,
        training=bool(training),
        flip=bool(flip),
        scale_jitter=tuple(scale_jitter) if scale_jitter else None,
        photometric=bool(photometric),
        seed=int(seed),
    )

    def load(epoch, index):
        try:
            image, targets = load_example(dataset, int(index), epoch=int(epoch), **options)
        except SoloError:
            raise
        except Exception as error:  # cv2 / numpy / pycocotools: one line naming the image
            record = dataset.records[int(index)]
            detail = (str(error).strip().splitlines() or [""])[-1][:160]
            raise SoloError(
                where(dataset.json_path, f"image {record.image_id}",
                      f"{record.path}: cannot load ({type(error).__name__}: {detail})")
            ) from None
        return (
            image,
            targets["masks"],
            targets["classes"],
            targets["boxes"],
            targets["ignore"],
            targets["image_info"],
        )

    def load_element(epoch, index):
        image, masks, classes, boxes, ignore, image_info = tf.numpy_function(
            load,
            [epoch, index],
            [tf.uint8, tf.uint8, tf.int32, tf.float32, tf.uint8, tf.float32],
            stateful=False,
        )
        image.set_shape((height, width, 3))
        masks.set_shape((max_instances, small_h, small_w))
        classes.set_shape((max_instances,))
        boxes.set_shape((max_instances, 4))
        ignore.set_shape((small_h, small_w))
        image_info.set_shape((4,))
        targets = {
            "masks": masks,
            "classes": classes,
            "boxes": boxes,
            "ignore": ignore,
            "image_info": image_info,
        }
        return tf.cast(image, tf.float32), targets

    # The epoch number: one per pass (a repetition, or a new iterator).
    epoch_counter = epoch_variable
    if epoch_counter is None:
        epoch_counter = new_epoch_variable()
    epochs = tf.data.Dataset.range(1).map(lambda _: epoch_counter.assign_add(1) - 1)
    if repeat:
        epochs = epochs.repeat()
    seed_tensor = tf.constant(int(seed), tf.int64)

    def epoch_indices(epoch):
        indices = tf.range(num_images, dtype=tf.int64)
        if shuffle:
            keys = tf.random.stateless_uniform([num_images], seed=tf.stack([seed_tensor, epoch]))
            indices = tf.cast(tf.argsort(keys), tf.int64)
        return tf.data.Dataset.from_tensor_slices((tf.fill([num_images], epoch), indices))

    elements = epochs.flat_map(epoch_indices)
    cardinality = tf.data.INFINITE_CARDINALITY if repeat else num_images
    elements = elements.apply(tf.data.experimental.assert_cardinality(cardinality))
    elements = elements.map(load_element, num_parallel_calls=num_parallel_calls, deterministic=True)
    batches = elements.batch(batch_size, drop_remainder=drop_remainder)
    batches = batches.prefetch(tf.data.AUTOTUNE)
    data_options = tf.data.Options()
    data_options.deterministic = True
    return batches.with_options(data_options)


def steps_per_epoch(dataset, batch_size, drop_remainder=False):
    """Batches in one pass over a dataset.

    Args:
        dataset: a :class:`keras_solo.data.coco.CocoDataset` or an image count.
        batch_size: images per batch.
        drop_remainder: whether the last partial batch is dropped. Defaults to
            False.

    Returns:
        int number of batches.
    """
    count = dataset if isinstance(dataset, int) else len(dataset.records)
    return count // batch_size if drop_remainder else math.ceil(count / batch_size)


def as_solo_error(error):
    """Recovers the SoloError raised inside the pipeline's numpy function.

    TensorFlow re-raises Python exceptions from ``tf.numpy_function`` as a
    ``tf.errors.OpError`` whose message holds the original line and a
    traceback.

    Args:
        error: an exception caught while iterating a dataset.

    Returns:
        A :class:`SoloError` with the original one-line message, or None if
        ``error`` does not carry one.
    """
    if isinstance(error, SoloError):
        return error
    match = re.search(r"SoloError: ([^\n]*)", str(error))
    return SoloError(match.group(1)) if match else None


def release_pipelines():
    """Destroys unreachable ``tf.data`` iterators now (a full ``gc.collect``).

    An exception raised while a dataset is iterated (inside ``model.fit``
    too) keeps the iterator alive through its traceback's reference cycles.
    Left for interpreter shutdown, destroying it waits for the pipeline's
    in-flight ``numpy_function`` calls, whose threads can no longer take the
    GIL: the process prints its error and then hangs forever with an idle
    CPU (gdb: the main thread in ``MapAndBatchDatasetOp::...::~Iterator``
    under ``Py_FinalizeEx``). Collected while Python still runs, the
    iterator finishes those calls and goes. Call after leaving the
    ``except`` block, before the process exits.
    """
    gc.collect()


def call_with_data_errors(func, *args, **kwargs):
    """Calls ``func``; an input-pipeline failure comes back as one SoloError.

    A ``tf.errors.OpError`` (or any exception) whose message carries the
    SoloError line of the pipeline's numpy function is replaced by that
    SoloError, raised with no chained context after the failed call's frames
    and its iterator were released (:func:`release_pipelines`), so the
    process can print one line and exit. Other exceptions propagate
    unchanged.

    Args:
        func: e.g. ``model.fit``, or a function looping over a dataset.
        *args: positional arguments of ``func``.
        **kwargs: keyword arguments of ``func``.

    Returns:
        What ``func`` returns.

    Raises:
        SoloError: the pipeline's one-line error (naming the JSON file, the
            image id and the image file).
    """
    try:
        return func(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - re-raised unless it carries a SoloError
        converted = as_solo_error(error)
        if converted is None or converted is error:
            raise
        message = str(converted)
    release_pipelines()  # the OpError and its traceback are out of scope here
    raise SoloError(message)


def _check_args(dataset, image_size, size_divisor, max_instances, mask_stride, batch_size, scale_jitter, seed):
    """Validates build_dataset arguments; returns (W, H)."""
    source = getattr(dataset, "json_path", "dataset")
    if not getattr(dataset, "records", None):
        raise SoloError(f"{source}: no images to build a dataset from")
    for name, value in (
        ("size_divisor", size_divisor),
        ("max_instances", max_instances),
        ("mask_stride", mask_stride),
        ("batch_size", batch_size),
    ):
        if not _is_int(value) or value < 1:
            raise SoloError(f"{name} must be a positive integer, got {value!r}")
    if not _is_int(seed) or seed < 0:
        raise SoloError(f"seed must be a non-negative integer, got {seed!r}")
    try:
        width, height = image_size
    except (TypeError, ValueError):
        raise SoloError(f"image_size must be (W, H), got {image_size!r}") from None
    if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
        raise SoloError(f"image_size must be two positive integers (W, H), got {image_size!r}")
    for name, value in (("W", width), ("H", height)):
        if value % size_divisor:
            raise SoloError(
                f"image_size {width}x{height}: {name} = {value} is not a multiple of size_divisor {size_divisor}"
            )
        if value % mask_stride:
            raise SoloError(
                f"image_size {width}x{height}: {name} = {value} is not a multiple of mask_stride {mask_stride}"
            )
    if scale_jitter:
        try:
            low, high = (float(v) for v in scale_jitter)
        except (TypeError, ValueError):
            raise SoloError(f"scale_jitter must be (low, high) or None, got {scale_jitter!r}") from None
        if not 0.0 < low <= high:
            raise SoloError(f"scale_jitter must satisfy 0 < low <= high, got {scale_jitter!r}")
    return int(width), int(height)


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _warn_if_truncated(dataset, max_instances):
    """Warns once when images hold more (non-crowd) instances than slots."""
    counts = [sum(not ann.iscrowd for ann in record.annotations) for record in dataset.records]
    over = [count for count in counts if count > max_instances]
    if over:
        warnings.warn(
            f"{dataset.json_path}: {len(over)} image(s) have more than max_instances={max_instances} "
            f"instances (up to {max(over)}); keeping the {max_instances} largest per image",
            stacklevel=3,
        )
