"""One training or evaluation example in numpy, for any input pipeline.

:func:`load_example` reads an image and its instances, augments, letterboxes
and pads them into the per-image arrays of the data -> model contract
(docs/DESIGN.md). :mod:`.pipeline` batches it with ``tf.data``
(TensorFlow), :mod:`.loader` with a ``keras.utils.PyDataset`` (any Keras
backend, no TensorFlow). Nothing here imports TensorFlow.
"""

import dataclasses
import gc
import math
import re
import warnings

import numpy as np

from keras_solo.config import DataConfig
from keras_solo.data import transforms
from keras_solo.data.coco import decode_instances
from keras_solo.errors import SoloError

_DATA = DataConfig()  # the defaults of ExampleOptions

# Copy-paste: an instance of the image that a paste covers is dropped when
# fewer than this many of its input-resolution (letterboxed canvas) pixels
# stay visible; about one cell of a stride-4 target mask.
COPY_PASTE_MIN_PIXELS = 20
# The paste's random numbers come from their own stream, [seed, epoch, index,
# this tag], so turning copy-paste on leaves the image's own augmentation
# unchanged (a tag of 0 would repeat the [seed, epoch, index] stream).
_COPY_PASTE_STREAM = 1

__all__ = ["ExampleOptions", "as_solo_error", "call_with_data_errors", "check_dataset", "example_options",
           "load_example", "release_pipelines", "steps_per_epoch", "warn_if_truncated"]


@dataclasses.dataclass(frozen=True)
class ExampleOptions:
    """How `load_example` makes an example (`pipeline.build_dataset` and
    `loader.SoloPyDataset` take an `ExampleOptions`; `builders.example_options`
    makes one from a config). The defaults are `config.DataConfig`'s.

    Attributes:
        image_size: the network input ``(W, H)``, multiples of
            ``size_divisor`` and ``mask_stride``. (640, 640).
        size_divisor: the network's largest stride. 32.
        max_instances: M, instance slots per image; an image with more keeps
            the M largest (one warning with the count). 64.
        mask_stride: ms, the target mask stride. 4.
        flip: random horizontal flip (p = 0.5) when training. True.
        scale_jitter: ``(low, high)`` range of the letterbox scale multiplier
            when training, or None. (0.8, 1.2).
        photometric: colour jitter when training. True.
        copy_paste: probability in [0, 1] that a training example gets
            instances of another record pasted on (simple copy-paste,
            Ghiasi et al. 2021; see `load_example`). 0.0 (off).
        seed: non-negative int; fixes the shuffle order and augmentation. 0.

    Raises:
        SoloError: a value out of range (one line naming it).
    """

    image_size: tuple = (640, 640)
    size_divisor: int = _DATA.size_divisor
    max_instances: int = _DATA.max_instances
    mask_stride: int = _DATA.mask_stride
    flip: bool = _DATA.flip
    scale_jitter: tuple = _DATA.scale_jitter
    photometric: bool = _DATA.photometric
    copy_paste: float = _DATA.copy_paste
    seed: int = 0

    def __post_init__(self):
        for name in ("size_divisor", "max_instances", "mask_stride"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise SoloError(f"{name} must be a positive integer, got {value!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise SoloError(f"seed must be a non-negative integer, got {self.seed!r}")
        try:
            width, height = self.image_size
        except (TypeError, ValueError):
            raise SoloError(f"image_size must be (W, H), got {self.image_size!r}") from None
        if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
            raise SoloError(f"image_size must be two positive integers (W, H), got {self.image_size!r}")
        for name, value in (("W", width), ("H", height)):
            for what in ("size_divisor", "mask_stride"):
                if value % getattr(self, what):
                    raise SoloError(f"image_size {width}x{height}: {name} = {value} is not a multiple of "
                                    f"{what} {getattr(self, what)}")
        jitter = None
        if self.scale_jitter:
            try:
                jitter = tuple(float(v) for v in self.scale_jitter)
                low, high = jitter
            except (TypeError, ValueError):
                raise SoloError(f"scale_jitter must be (low, high) or None, got {self.scale_jitter!r}") from None
            if not 0.0 < low <= high:
                raise SoloError(f"scale_jitter must satisfy 0 < low <= high, got {self.scale_jitter!r}")
        if (isinstance(self.copy_paste, bool) or not isinstance(self.copy_paste, (int, float, np.number))
                or not 0.0 <= self.copy_paste <= 1.0):
            raise SoloError(f"copy_paste must be a probability in [0, 1], got {self.copy_paste!r}")
        for name, value in (("image_size", (int(width), int(height))), ("scale_jitter", jitter),
                            ("flip", bool(self.flip)), ("photometric", bool(self.photometric)),
                            ("copy_paste", float(self.copy_paste)), ("seed", int(self.seed))):
            object.__setattr__(self, name, value)

    def replace(self, **changes):
        """A copy with some options changed (checked again)."""
        return dataclasses.replace(self, **changes)


def example_options(options=None, **changes):
    """`options` (default `ExampleOptions()`) with `changes`, e.g. ``image_size=(256, 128)``."""
    options = ExampleOptions() if options is None else options
    if not isinstance(options, ExampleOptions):
        raise SoloError(f"options must be an ExampleOptions, got {type(options).__name__}")
    return options.replace(**changes) if changes else options


def load_example(dataset, index, options=None, *, training=False, epoch=0):
    """Builds one letterboxed, augmented, padded example in numpy.

    Order: letterbox with scale jitter and a random crop of any overflow,
    then horizontal flip and photometric jitter of the image's part of the
    canvas. Masks and the crowd
    ignore map go through exactly the image's geometry; instances whose mask
    is empty afterwards are dropped; boxes are the masks' extents. With more
    than ``max_instances`` instances the largest (by mask area) are kept.
    Augmentation happens only when ``training``.

    Copy-paste (``options.copy_paste`` > 0, training only): with that
    probability another random record of the dataset is read and augmented
    on its own (scale jitter, crop offset, flip, colour; random numbers from
    a separate stream, so the image's own augmentation is unchanged), and a
    random subset of its non-crowd instances (each with p = 0.5, at least
    one; those the crop leaves empty are lost) is pasted on the canvas at
    the same place, no blending. The
    pasted pixels leave every instance and crowd region below; an instance
    left with fewer than ``COPY_PASTE_MIN_PIXELS`` canvas pixels is dropped.
    The pasted instances follow the image's (boxes from masks, the
    ``max_instances`` largest kept).

    Args:
        dataset: a :class:`keras_solo.data.coco.CocoDataset`.
        index: record index in ``dataset.records``.
        options: an `ExampleOptions` (size, slots, stride, augmentation,
            seed). Defaults to ``ExampleOptions()``.
        training: apply augmentation. Defaults to False.
        epoch: pass over the data, part of the RNG seed. Defaults to 0.

    Returns:
        ``(image, targets)``: uint8 (H, W, 3) and a dict of numpy arrays with
        the per-image shapes of the module table (``masks`` (M, H/ms, W/ms),
        ``classes`` (M,), ``boxes`` (M, 4), ``ignore`` (H/ms, W/ms),
        ``image_info`` (4,)).

    Raises:
        SoloError: the image cannot be read or does not match the JSON.
    """
    options = example_options(options)
    image_size, max_instances, mask_stride = options.image_size, options.max_instances, options.mask_stride
    seed = options.seed
    record = dataset.records[index]
    rng = np.random.default_rng([int(seed), int(epoch), int(index)])
    decoded = decode_instances(dataset, record)
    orig_h, orig_w = decoded["image"].shape[:2]
    image, masks, scale = _augment(decoded["image"], decoded["masks"], options, training, rng)

    labels, iscrowd = decoded["labels"], decoded["iscrowd"]
    if training and options.copy_paste > 0.0:
        paste_rng = np.random.default_rng([int(seed), int(epoch), int(index), _COPY_PASTE_STREAM])
        if paste_rng.random() < options.copy_paste:
            pasted = _paste_source(dataset, index, options, paste_rng)
            if pasted is not None:
                image, masks, labels, iscrowd = _paste(image, masks, labels, iscrowd, *pasted)
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


def _augment(image, masks, options, training, rng):
    """Letterbox (scale jitter, crop offset), flip and colour of one decoded image: ``(image, masks, scale)``."""
    image_size, scale_jitter = options.image_size, options.scale_jitter
    # Draw every random number in a fixed order so turning one augmentation
    # off leaves the others unchanged.
    do_flip = rng.random() < 0.5
    low, high = scale_jitter if scale_jitter else (1.0, 1.0)
    jitter = rng.uniform(low, high)
    offset = rng.random(2)

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
        if options.flip and do_flip:
            image[:keep_h, :keep_w], masks[:, :keep_h, :keep_w] = transforms.hflip(
                image[:keep_h, :keep_w], masks[:, :keep_h, :keep_w])
        if options.photometric:
            image[:keep_h, :keep_w] = transforms.photometric(image[:keep_h, :keep_w], rng)
    return image, masks, scale


def _paste_source(dataset, index, options, rng):
    """What copy-paste puts on record ``index``: ``(image, masks, labels)`` on the canvas, or None.

    Another record (uniform over the others) and a random subset of its
    non-crowd instances (each with p = 0.5, at least one), augmented as a
    training example with ``rng``; chosen instances that the crop leaves
    empty are left out. The subset is drawn before the resize so only its
    masks are resized. None when the dataset has one record, the other
    record has no non-crowd instance, or none of the chosen is visible.
    """
    count = len(dataset.records)
    if count < 2:
        return None
    other = int(rng.integers(count - 1))
    other += other >= index
    decoded = decode_instances(dataset, dataset.records[other])
    things = np.flatnonzero(~decoded["iscrowd"])
    if not len(things):
        return None
    chosen = rng.random(len(things)) < 0.5
    if not chosen.any():
        chosen[rng.integers(len(things))] = True
    things = things[chosen]
    # Views, not a fancy-indexed copy: the masks stay the transposed views
    # `transforms.resize_masks` shrinks without copying.
    masks = [decoded["masks"][i] for i in things]
    image, masks, _ = _augment(decoded["image"], masks, options, True, rng)
    visible = masks.any(axis=(1, 2))
    if not visible.any():
        return None
    return image, masks[visible], decoded["labels"][things][visible]


def _paste(image, masks, labels, iscrowd, paste_image, paste_masks, paste_labels):
    """Puts ``paste_masks``' pixels of ``paste_image`` on ``image`` (in place) and updates the instances.

    Every mask (crowd ones too) loses the covered pixels; a non-crowd
    instance that is covered and left with fewer than
    ``COPY_PASTE_MIN_PIXELS`` pixels is dropped. The pasted instances come
    after the image's own.

    Returns:
        ``(image, masks, labels, iscrowd)``.
    """
    covered = paste_masks.any(axis=0)
    np.copyto(image, paste_image, where=covered[..., None])
    keep = np.ones(len(masks), bool)
    if len(masks):
        hit = np.flatnonzero(masks[:, covered].any(axis=1))
        for n in hit:
            masks[n][covered] = 0
            keep[n] = iscrowd[n] or np.count_nonzero(masks[n]) >= COPY_PASTE_MIN_PIXELS
    masks = np.concatenate([masks[keep], paste_masks.astype(np.uint8)])
    labels = np.concatenate([labels[keep], paste_labels]).astype(labels.dtype)
    iscrowd = np.concatenate([iscrowd[keep], np.zeros(len(paste_masks), bool)])
    return image, masks, labels, iscrowd


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


def check_dataset(dataset, batch_size):
    """Raises SoloError unless `dataset` has images and `batch_size` is a positive integer."""
    source = getattr(dataset, "json_path", "dataset")
    if not getattr(dataset, "records", None):
        raise SoloError(f"{source}: no images to build a dataset from")
    if not _is_int(batch_size) or batch_size < 1:
        raise SoloError(f"batch_size must be a positive integer, got {batch_size!r}")


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
