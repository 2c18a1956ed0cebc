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

import tensorflow as tf

from keras_solo.data.coco import check_image_files
from keras_solo.data.examples import (ExampleOptions, as_solo_error, call_with_data_errors,  # noqa: F401
                                      check_dataset, example_options, load_example, release_pipelines,
                                      steps_per_epoch, warn_if_truncated)
from keras_solo.errors import SoloError, where

__all__ = ["ExampleOptions", "as_solo_error", "build_dataset", "call_with_data_errors", "load_example",
           "release_pipelines", "steps_per_epoch"]


def new_epoch_variable(start=0):
    """A pass counter for `build_dataset(epoch_variable=...)`, on the host."""
    with tf.device("/cpu:0"):  # tf.data functions run on the host
        return tf.Variable(int(start), dtype=tf.int64, trainable=False, name="data_epoch")


def build_dataset(
    dataset,
    options=None,
    *,
    batch_size=2,
    training=False,
    shuffle=None,
    repeat=False,
    drop_remainder=None,
    num_parallel_calls=tf.data.AUTOTUNE,
    check_images=None,
    epoch_variable=None,
    **changes,
):
    """Builds the ``tf.data`` input pipeline.

    Args:
        dataset: a :class:`keras_solo.data.coco.CocoDataset`.
        options: an `ExampleOptions` (input size, instance slots, mask
            stride, augmentation, seed). Defaults to ``ExampleOptions()``.
        batch_size: images per batch. Defaults to 2.
        training: enables augmentation (flip, scale jitter, photometric).
            Defaults to False.
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
        **changes: `ExampleOptions` fields to change, e.g.
            ``image_size=(256, 128)``.

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
    options = example_options(options, **changes)
    check_dataset(dataset, batch_size)
    check_images = training if check_images is None else bool(check_images)
    if check_images:
        check_image_files(dataset)
    shuffle = training if shuffle is None else bool(shuffle)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)
    warn_if_truncated(dataset, options.max_instances)

    num_images = len(dataset.records)
    (width, height), max_instances, seed = options.image_size, options.max_instances, options.seed
    small_h, small_w = height // options.mask_stride, width // options.mask_stride
    training = bool(training)

    def load(epoch, index):
        try:
            image, targets = load_example(dataset, int(index), options, training=training, epoch=int(epoch))
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
