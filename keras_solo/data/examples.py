"""One training or evaluation example in numpy, for any input pipeline.

:func:`load_example` reads an image and its instances, augments, letterboxes
and pads them into the per-image arrays of the data -> model contract
(docs/DESIGN.md). :mod:`.pipeline` batches it with ``tf.data``
(TensorFlow), :mod:`.loader` with a ``keras.utils.PyDataset`` (any Keras
backend, no TensorFlow). Nothing here imports TensorFlow.
"""

import gc
import math
import re
import warnings

import numpy as np

from keras_solo.data import transforms
from keras_solo.data.coco import decode_instances
from keras_solo.errors import SoloError

__all__ = ["as_solo_error", "call_with_data_errors", "check_args", "load_example", "release_pipelines",
           "steps_per_epoch", "warn_if_truncated"]


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
        # resize: the same augmentations as on the original, at a sixth of
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


def check_args(dataset, image_size, size_divisor, max_instances, mask_stride, batch_size, scale_jitter, seed):
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


def warn_if_truncated(dataset, max_instances):
    """Warns once when images hold more (non-crowd) instances than slots."""
    counts = [sum(not ann.iscrowd for ann in record.annotations) for record in dataset.records]
    over = [count for count in counts if count > max_instances]
    if over:
        warnings.warn(
            f"{dataset.json_path}: {len(over)} image(s) have more than max_instances={max_instances} "
            f"instances (up to {max(over)}); keeping the {max_instances} largest per image",
            stacklevel=3,
        )


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
    """Destroys unreachable input iterators (``tf.data``) now (a full ``gc.collect``).

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
