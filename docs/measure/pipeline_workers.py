"""The training input at 1344x672 (the paper preset's) vs its parallelism, cityscapes5 train frames.

    python docs/measure/pipeline_workers.py [BATCHES]   (default 12 batches of 2 per setting and round)

tf.data `num_parallel_calls` 1 / 2 / AUTOTUNE, and the TensorFlow-free
`SoloPyDataset` with 1 / 2 threads; 2 interleaved rounds, a fresh iterator per
setting and round, 3 warm-up batches; images/s.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, ".")  # from the repository root

import tensorflow as tf  # noqa: E402

from keras_solo import builders  # noqa: E402
from keras_solo.config import load_config  # noqa: E402
from keras_solo.data.loader import SoloPyDataset  # noqa: E402
from keras_solo.data.pipeline import build_dataset  # noqa: E402

BATCHES = int(sys.argv[1]) if len(sys.argv) > 1 else 12
config = load_config("training/solo_r50_attention.yaml",
                     ["train.batch_size=2", "data.train_images=../shared/data/cityscapes5"])
coco = builders.load_split(config, "train")
kwargs = builders.dataset_kwargs(config, training=True)


def tf_data(calls):
    return iter(build_dataset(coco, batch_size=2, repeat=True, num_parallel_calls=calls, **kwargs))


def py_dataset(threads):
    options = dict(kwargs)
    options.pop("training")
    loader = SoloPyDataset(coco, batch_size=2, training=True, workers=threads, use_multiprocessing=False, **options)
    loader.on_epoch_begin()

    def batches():
        index = 0
        while True:  # threads: PyDataset's own enqueuer, as model.fit drives it
            yield loader[index % len(loader)]
            index += 1
    return batches() if threads == 1 else _enqueued(loader)


def _enqueued(loader):
    from keras.src.trainers.data_adapters.py_dataset_adapter import OrderedEnqueuer

    enqueuer = OrderedEnqueuer(loader, workers=loader.workers, use_multiprocessing=False)
    enqueuer.start()
    return enqueuer.get()


settings = {"tf.data 1": lambda: tf_data(1), "tf.data 2": lambda: tf_data(2),
            "tf.data AUTOTUNE": lambda: tf_data(tf.data.AUTOTUNE),
            "PyDataset 1 thread": lambda: py_dataset(1), "PyDataset 2 threads": lambda: py_dataset(2)}
for round_ in (1, 2):
    row = []
    for name, make in settings.items():
        it = make()  # a fresh iterator each time: live ones would fill their buffers while others are timed
        for _ in range(3):
            next(it)  # warm-up (start-up, the first prefetches)
        start = time.perf_counter()
        for _ in range(BATCHES):
            next(it)
        row.append(f"{name} {2 * BATCHES / (time.perf_counter() - start):.1f}")
        del it
    print(f"round {round_} images/s: " + ", ".join(row), flush=True)
