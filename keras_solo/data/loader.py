"""The input without TensorFlow: `load_example` batched by a `keras.utils.PyDataset`.

For Keras' JAX (or torch) backend on a machine without TensorFlow. The
batches have the layout of `pipeline.build_dataset` (numpy instead of
tensors). `workers` > 1 with `use_multiprocessing` loads in processes, so
the numpy work does not share one GIL.

Order: a training loader walks an endless sequence of passes over the data,
each pass in the order of a permutation drawn from
``numpy.random.default_rng([seed, pass])``, and a batch never straddles a
gap: batch ``b`` of epoch ``e`` holds the examples at positions
``(e * steps + b) * batch_size ...`` of that sequence (drop-remainder, as
the ``tf.data`` pipeline). Each example's augmentation is drawn from
``[seed, pass, index]`` as there. Evaluation loaders visit the records in
order, once.
"""

import math

import keras
import numpy as np

from keras_solo.data.coco import check_image_files
from keras_solo.data.examples import check_dataset, example_options, load_example, warn_if_truncated

class SoloPyDataset(keras.utils.PyDataset):
    """Batches of `load_example`.

    Args:
        dataset: a :class:`keras_solo.data.coco.CocoDataset`.
        batch_size: images per batch.
        training: shuffle, augment and drop the last partial batch.
        steps: batches per epoch when training. Defaults to None (one
            pass, rounded down).
        epoch: the epoch to start at (a resumed run). Defaults to 0.
        check_images: check every image file up front, as
            `pipeline.build_dataset` does. Defaults to None (= ``training``).
        workers, use_multiprocessing, max_queue_size: as `keras.utils.PyDataset`.
        options: an `ExampleOptions`, as `pipeline.build_dataset`.
        **changes: `ExampleOptions` fields to change.
    """

    def __init__(self, dataset, options=None, *, batch_size, training, steps=None, epoch=0, check_images=None,
                 workers=1, use_multiprocessing=False, max_queue_size=8, **changes):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        self.options = example_options(options, **changes)
        check_dataset(dataset, batch_size)
        if training if check_images is None else check_images:
            check_image_files(dataset)
        warn_if_truncated(dataset, self.options.max_instances)
        self.dataset, self.batch_size, self.training = dataset, int(batch_size), bool(training)
        count = len(dataset.records)
        if self.training:
            self.steps = int(steps) if steps else max(1, count // self.batch_size)
        else:
            self.steps = math.ceil(count / self.batch_size)
        self.epoch = int(epoch)

    def __len__(self):
        return self.steps

    def assign(self, epoch):
        """Sets the epoch (the `tf.Variable` interface `train.ResumableBackup` uses)."""
        self.epoch = int(epoch)

    def on_epoch_end(self):
        self.epoch += 1

    def _positions(self, index):
        """`(pass, record index)` of each example of batch `index`."""
        count = len(self.dataset.records)
        if not self.training:
            stop = min((index + 1) * self.batch_size, count)
            return [(0, k) for k in range(index * self.batch_size, stop)]
        start = (self.epoch * self.steps + index) * self.batch_size
        out, orders = [], {}
        for position in range(start, start + self.batch_size):
            epoch, offset = divmod(position, count)
            if epoch not in orders:
                orders[epoch] = np.random.default_rng([self.options.seed, epoch]).permutation(count)
            out.append((epoch, int(orders[epoch][offset])))
        return out

    def __getitem__(self, index):
        if not 0 <= index < self.steps:
            raise IndexError(f"batch {index} of {self.steps}")
        images, targets = [], []
        for epoch, record in self._positions(index):
            image, target = load_example(self.dataset, record, self.options, training=self.training, epoch=epoch)
            images.append(image)
            targets.append(target)
        batch_targets = {key: np.stack([t[key] for t in targets]) for key in targets[0]}
        return np.stack(images).astype(np.float32), batch_targets
