"""The one place that maps a `SOLOConfig` to component arguments.

Components (model, dataset) take explicit keyword arguments; nothing else
reads the whole config.
"""

import os

from keras_solo.errors import SoloError


def build_model(config, build=True):
    """A `SOLO` model for the config (variables created when `build`)."""
    from keras_solo.model.solo import SOLO, solo_kwargs

    model = SOLO(**solo_kwargs(config))
    if build:
        model.build()
    return model


def training_freeze(config):
    """`(up_to, frozen_norm)` of `freeze_backbone` for the config ("auto" resolved)."""
    pretrained = str(config.model.backbone_weights or "none") != "none"
    up_to = config.train.freeze_backbone
    norm = config.train.backbone_norm
    if up_to == "auto":
        up_to = "C2" if pretrained else "none"
    if norm == "auto":
        norm = "frozen" if pretrained else "train"
    return up_to, norm == "frozen"


def freeze_for_training(model, config):
    """Applies the config's backbone freezing to a built `SOLO`; returns a log line."""
    from keras_solo.model.backbone import freeze_backbone

    up_to, frozen_norm = training_freeze(config)
    layers = freeze_backbone(model.backbone, up_to, frozen_norm)
    parts = ([f"layers up to {up_to} fixed"] if up_to != "none" else []) + (["BatchNorm frozen"] if frozen_norm else [])
    return f"backbone: {'; '.join(parts) or 'every layer trains'} ({layers} layers not trained)"


def resolve_path(path, base=None):
    """Resolves a config path relative to `base` (the config's folder) when it
    does not exist relative to the working directory."""
    if not path:
        return path
    if os.path.isabs(path) or os.path.exists(path) or base is None:
        return path
    candidate = os.path.join(base, path)
    return candidate if os.path.exists(candidate) else path


def load_split(config, split):
    """Loads the COCO file of a split ("train" | "val") with the config's classes."""
    from keras_solo.data.coco import load_coco

    data = config.data
    json_path = data.train_json if split == "train" else data.val_json
    images = data.train_images if split == "train" else data.val_images
    if not json_path:
        raise SoloError(f"data.{split}_json is empty: set it in the config or with --set")
    return load_coco(json_path, images or None, strict=data.strict, class_names=config.model.class_names)


def example_options(config):
    """The `data.examples.ExampleOptions` of a config (input size, slots, stride, augmentation, seed)."""
    from keras_solo.data.examples import ExampleOptions

    d = config.data
    return ExampleOptions(image_size=tuple(config.model.input_size), size_divisor=d.size_divisor,
                          max_instances=d.max_instances, mask_stride=d.mask_stride, flip=d.flip,
                          scale_jitter=d.scale_jitter, photometric=d.photometric, copy_paste=d.copy_paste,
                          seed=config.train.seed)


def build_dataset(config, coco, *, training, batch_size=None, repeat=False, epoch_variable=None):
    """A tf.data pipeline over a loaded `CocoDataset`."""
    from keras_solo.data.pipeline import build_dataset as _build

    return _build(coco, example_options(config), batch_size=batch_size or config.train.batch_size,
                  training=training, repeat=repeat, epoch_variable=epoch_variable)


def build_loader(config, coco, *, training, steps=None):
    """The TensorFlow-free input (`data.loader.SoloPyDataset`) over a loaded `CocoDataset`."""
    from keras_solo.data.loader import SoloPyDataset

    # Threads, not processes: JAX is multithreaded and forking it can deadlock;
    # OpenCV's resizes and the letterbox run without the GIL.
    workers = max(1, min(4, os.cpu_count() or 1))
    return SoloPyDataset(coco, example_options(config), batch_size=config.train.batch_size, training=training,
                         steps=steps, workers=workers, use_multiprocessing=False)


def build_input(config, coco, *, training, steps=None):
    """The input `train` uses on the current Keras backend: `(data, pass_counter)`.

    TensorFlow: the ``tf.data`` pipeline (repeating when training) and its
    pass counter variable; other backends: the TensorFlow-free
    `SoloPyDataset`, which is its own pass counter. Either counter has
    ``assign(epoch)`` (`train.ResumableBackup` sets it on resume).
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        loader = build_loader(config, coco, training=training, steps=steps)
        return loader, loader
    from keras_solo.data.pipeline import new_epoch_variable

    counter = new_epoch_variable()
    return build_dataset(config, coco, training=training, repeat=training, epoch_variable=counter), counter

