"""The public Python API, for a user's own `model.fit` script (`import
keras_solo`; the `keras-solo` command is a thin layer over the same parts)::

    import keras_solo

    model = keras_solo.SOLO.from_preset("edge", class_names=("car", "bus"))
    train = keras_solo.coco_dataset("train.json", "images/", model=model, training=True)
    val = keras_solo.coco_dataset("val.json", "images/", model=model)
    model.compile()                      # the preset's optimizer and schedule
    model.fit(train, validation_data=val, epochs=12,
              callbacks=[keras_solo.COCOEvalCallback("val.json", "images/", model=model)])
    model.save("car_bus.keras")
    keras_solo.detect(model, "frame.jpg")     # or a .keras / .tflite / .onnx path
    model = keras_solo.load_model("car_bus.keras")
    keras_solo.coco_metrics("car_bus.keras", "val.json", "images/")
    keras_solo.export_model(model, "car_bus.tflite", quant="int8", calibration="train.json", images="images/")

    keras_solo.train_run("edge", "runs/edge")   # what `keras-solo train` runs: a resumable run folder
"""

import dataclasses
import os

import numpy as np

# The functions are named apart from the modules keras_solo.predict / .evaluate / .export:
# a package attribute named like a submodule is replaced by that module once it is imported.

from keras_solo.config import load_config, preset_names
from keras_solo.errors import SoloError
from keras_solo.model.pyramid import PyramidBackbone
from keras_solo.model.solo import SOLO
from keras_solo.train import EvalCallback, ResumableBackup

__all__ = ["SOLO", "PyramidBackbone", "preset_names", "load_config", "load_model", "coco_dataset", "train_run",
           "detect", "load_engine", "coco_metrics", "export_model", "COCOEvalCallback", "ResumableBackup"]


def load_model(path):
    """A `SOLO` from a `.keras` file (``keras.saving.load_model`` in safe
    mode, with keras-solo's layers registered).

    The file holds the model, not the preset's training section: to train it
    further, give `compile` an optimizer (``model.compile(optimizer=...)``).

    Raises:
        SoloError: a missing file, not a `.keras` archive, or not a SOLO model.
    """
    from keras_solo.model.solo import load_model as load

    return load(path)


def _config_of(model=None, config=None, batch_size=None):
    """The config a dataset is built with: `config`, the model's preset, or the defaults at the model's size."""
    if config is None and model is not None:
        config = getattr(model, "preset_config", None)
        if config is None:
            config = load_config(None, [f"model.input_size={list(model.input_size)}",
                                        f"model.num_classes={model.num_classes}",
                                        f"model.class_names={list(model.class_names)}"])
    if config is None:
        raise SoloError("coco_dataset needs model= or config= (the input size, classes and augmentation)")
    if batch_size is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=int(batch_size)))
    return config


def _load(json_path, images, class_names, strict=False):
    from keras_solo.data.coco import load_coco

    coco = load_coco(json_path, images, strict=strict, class_names=class_names)
    if coco.records and not os.path.exists(coco.records[0].path):
        raise SoloError(f"{json_path}: image file not found: {coco.records[0].path} (images= is the folder the "
                        f"JSON's file_name entries are relative to; default the JSON's folder)")
    return coco


def coco_dataset(json_path, images=None, *, model=None, config=None, training=False, batch_size=None):
    """What `model.fit` takes from a COCO instances JSON and its image folder.

    Args:
        json_path: COCO instances JSON (polygons or RLE).
        images: the folder its ``file_name``s are relative to (default: the
            JSON's folder).
        model: a `SOLO` (its preset's data options, input size and classes);
            or give `config` (a `SOLOConfig`).
        config: a `SOLOConfig` (`load_config`), instead of `model`.
        training: shuffle and augment (flip, scale jitter, colour), as the
            preset says; False for validation. Every image file is checked
            up front either way.
        batch_size: default the preset's ``train.batch_size``.

    Returns:
        A finite `tf.data.Dataset` of (images, targets) batches on the
        TensorFlow backend, a `keras.utils.PyDataset` on the others; one pass
        is one epoch. Classes are matched by name to the model's; the
        annotations of other classes are dropped with a warning.

    Raises:
        SoloError: a missing or bad JSON or image file, a class name the
            JSON lacks.
    """
    import keras

    from keras_solo import builders
    from keras_solo.data.coco import check_image_files

    config = _config_of(model, config, batch_size)
    coco = _load(json_path, images, config.model.class_names, config.data.strict)
    if not training:
        check_image_files(coco)  # training data is checked when its pipeline is built
    if keras.backend.backend() != "tensorflow":
        return builders.build_loader(config, coco, training=training)
    return builders.build_dataset(config, coco, training=training)


def train_run(config, out_dir, *, overrides=(), overwrite=False, callbacks=(), verbose=None):
    """Trains a preset into a run folder; what ``keras-solo train`` runs.

    The folder holds ``config.yaml``, ``best.keras`` (by ``val_AP`` with
    validation data and ``train.eval_every``, else by the loss), ``last.keras``, ``log.csv``, the loss
    curve and a backup: run the same call again after a crash and it goes
    on from the last epoch.

    Args:
        config: a preset name, a YAML path or a `SOLOConfig`.
        out_dir: the run folder.
        overrides: ``"section.key=value"`` strings, as ``--set``.
        overwrite: start afresh in a folder that holds a finished or another
            run (deleted only after the config and the data are checked).
        callbacks: more `keras.callbacks.Callback`s for `fit`.
        verbose: `fit`'s verbosity (default: a bar on a terminal, a line per
            epoch otherwise).

    Returns:
        ``(model, history dict)``.

    Raises:
        SoloError: a bad config or data file, a run folder in use or
            finished (without `overwrite`), a diverged loss.
    """
    from keras_solo.config import SOLOConfig, parse_override, replace
    from keras_solo.errors import check_output
    from keras_solo.train import train

    if isinstance(config, SOLOConfig):
        config = replace(config, **dict(parse_override(text) for text in overrides)) if overrides else config
    else:
        config = load_config(config, overrides)
    check_output(os.fspath(out_dir))
    return train(config, os.fspath(out_dir), overwrite=overwrite, resume=True, verbose=verbose,
                 extra_callbacks=tuple(callbacks))


class COCOEvalCallback(EvalCallback):
    """COCO mask AP on a validation JSON every `every` epochs of `fit`, added to
    the logs as ``val_AP``, ``val_AP50``, ... (monitor ``val_AP`` with
    `keras.callbacks.ModelCheckpoint(mode="max")`).

    Args:
        json_path, images: the validation set, as `coco_dataset`.
        model: the model being trained (for its classes).
        every: epochs between evaluations. Defaults to 1.
        limit: evaluate the first N images only (0 = all).
    """

    def __init__(self, json_path, images=None, *, model, every=1, limit=0):
        super().__init__(_load(json_path, images, model.class_names), every=every, limit=limit)


def load_engine(model, *, threads=None, overrides=()):
    """The inference engine `detect`, `coco_metrics` and ``keras-solo
    predict`` / ``track`` run, for a model in memory or a file.

    Args:
        model: a `SOLO`, or a `.keras` / `.tflite` / `.onnx` path (an export
            runs on the TF-free `keras_solo.runtime`).
        threads: CPU threads of the interpreter (default: its own choice).
        overrides: ``"eval.key=value"`` inference settings for a `.keras` path.

    Returns:
        A `keras_solo.runtime.engine.Engine`: ``engine(image, min_score)`` on
        an (h, w, 3) uint8 RGB array gives ``(found, seconds)`` (scores,
        labels, boxes, masks at the image's size; the time of each part), with
        ``input_size`` and ``class_names``; the runtime's video loops and
        `keras_solo.runtime.track.Tracker` take it.

    Raises:
        SoloError: a missing or unreadable file, overrides for an export.
    """
    from keras_solo.engine import KerasEngine
    from keras_solo.engine import load_engine as load_file

    if isinstance(model, SOLO):
        if overrides:
            raise SoloError("overrides= applies to a .keras path; for a SOLO set "
                            "model.decoder = model.decoder.replace(...)")
        return KerasEngine(model, threads=threads)
    return load_file(os.fspath(model), threads=threads, overrides=overrides)


_ENGINES = {}  # the engines detect() used last: a loop over images loads and compiles a model once


def _cached_engine(model):
    """`load_engine(model)`, kept for the next call while the model (and its decoder) or file is the same."""
    import keras

    cache = True
    if isinstance(model, SOLO):
        if keras.backend.backend() != "tensorflow":  # jax.jit reads the weights once: no cache
            cache = False
        key, parts = ("model", id(model), id(model.decoder)), (model, model.decoder)
    else:
        path = os.path.abspath(os.fspath(model))
        stat = os.stat(path) if os.path.exists(path) else None
        key, parts = (path, stat and stat.st_mtime_ns, stat and stat.st_size), ()
    if cache and key in _ENGINES:
        return _ENGINES[key][1]
    engine = load_engine(model)
    if cache:
        while len(_ENGINES) >= 2:
            _ENGINES.pop(next(iter(_ENGINES)))
        _ENGINES[key] = (parts, engine)  # holds the model and decoder, so their ids stay theirs
    return engine


def _image(image):
    """(source path or None, (h, w, 3) uint8 RGB array)."""
    from keras_solo.runtime.image import read_image

    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image), read_image(image)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise SoloError(f"detect: image is a {array.dtype} array of shape {array.shape}; expected (h, w, 3) uint8 "
                        "RGB (from OpenCV: cv2.cvtColor(image, cv2.COLOR_BGR2RGB)) or an image file")
    return None, array


def detect(model, image, *, score=0.3, masks=True):
    """Detections of one image at its own size.

    Args:
        model: a `SOLO`, or the path of a `.keras` model or an export
            (`.tflite`, `.onnx`; run by the TF-free `keras_solo.runtime`).
        image: an (h, w, 3) uint8 RGB array or an image file.
        score: keep detections above this score.
        masks: also give each instance's (h, w) bool mask.

    The last two models are kept loaded and compiled (a file until it
    changes), so calling `detect` in a loop over images is fast.

    Returns:
        A list of dicts, highest score first: ``label``, ``class``, ``score``,
        ``bbox_xywh`` (COCO, original pixels), ``segmentation`` (COCO RLE) and
        ``mask`` (with `masks`): the record of `detections.json`, the same
        for every format.
    """
    from keras_solo.runtime.detections import detections_record

    source, image = _image(image)
    engine = _cached_engine(model)
    found, _ = engine(image, min_score=score)
    instances = detections_record(source, found, engine.class_names)["instances"]
    if masks:
        for instance, mask in zip(instances, found["masks"]):
            instance["mask"] = mask
    return sorted(instances, key=lambda i: -i["score"])


def coco_metrics(model, json_path, images=None, *, limit=0, progress=False, overrides=(), return_detections=False):
    """COCO metrics of a model or an export on a COCO JSON (pycocotools);
    what ``keras-solo evaluate`` computes.

    Args:
        model: a `SOLO`, or a `.keras` / `.tflite` / `.onnx` path.
        json_path, images: the evaluation set, as `coco_dataset`; its
            classes must be the model's, in the same order.
        limit: the first N images only (0 = all).
        progress: show a progress bar.
        overrides: ``"eval.key=value"`` inference settings for a `.keras`
            path (for a `SOLO`, set ``model.decoder =
            model.decoder.replace(...)``; an export has them in its graph).
        return_detections: also return the detections in COCO results
            format (RLE masks).

    Returns:
        dict: ``segm`` and ``bbox`` (AP, AP50, AP75, APs, APm, APl),
        ``per_class`` segm AP, ``ms_per_image``; with `return_detections`,
        ``(metrics, detections)``.
    """
    from keras_solo.evaluate import evaluate_engine

    engine = load_engine(model, overrides=overrides)
    coco = _load(json_path, images, engine.class_names or None)
    metrics, detections = evaluate_engine(engine, coco, limit=limit, progress=progress)
    return (metrics, detections) if return_detections else metrics


def export_model(model, path, *, format=None, quant="fp32", top_k=50, calibration=None, images=None,
                 calibration_images=100, overwrite=False, source=None, export_config=None, progress=None):
    """Exports a `SOLO` (or a `.keras` path) for the device runtime; what
    ``keras-solo export`` runs.

    Args:
        path: the output (``.tflite`` / ``.onnx``); its sidecar ``MODEL.json`` is written beside it.
        format: "tflite", "onnx" or "saved_model" (`runtime.formats.FORMATS`);
            default: from the suffix of `path`.
        quant: "fp32", "fp16" or "int8" (TFLite).
        top_k: candidate masks decoded in the graph.
        calibration, images: for int8, a COCO JSON of training images and
            their folder; `calibration_images` of them, shuffled, set the ranges.
        overwrite: replace an existing `path`.
        source: the `.keras` file the model came from, for the sidecar
            (default: `model` when it is a path).
        export_config: the `config.ExportConfig` to record in the sidecar.
        progress: a callable for progress lines (e.g. `print`); None = silent.

    Returns:
        The sidecar dict (size, ops by precision, input size, ...).
    """
    from keras_solo.data.coco import check_image_files
    from keras_solo.export import check_format
    from keras_solo.export import export_model as export_graph
    from keras_solo.export.calibration import calibration_images as calibration_batches
    from keras_solo.runtime.formats import FORMATS

    named = [name for name, spec in FORMATS.items() if os.fspath(path).rstrip("/\\").endswith(spec["suffix"])]
    if format is None and not named:
        raise SoloError(f"{path}: give format= or a path ending in "
                        + ", ".join(spec["suffix"] for spec in FORMATS.values()))
    if format is not None and named and format not in named:
        raise SoloError(f"{path}: format={format!r}, but the suffix says {named[0]}")
    format = format or named[0]
    check_format(format, quant)
    if not isinstance(model, SOLO):
        from keras_solo.model.solo import load_model

        source, model = source or os.fspath(model), load_model(os.fspath(model))
    batches = info = None
    if quant == "int8":
        if calibration is None:
            raise SoloError(f"{path}: int8 needs calibration= (a COCO JSON of training images)")
        coco = _load(calibration, images, model.class_names)
        check_image_files(coco)  # a missing or broken image: one line now, not a TF error mid-conversion
        count = min(int(calibration_images), len(coco.records))
        batches = lambda: calibration_batches(coco, model.input_size, count)  # noqa: E731
        info = {"data": os.path.abspath(calibration), "images": count,
                "pipeline": "keras_solo.data.pipeline.build_dataset(training=False), shuffled, seed 0"}
    return export_graph(model, os.fspath(path), fmt=format, quant=quant, top_k=top_k, calibration=batches,
                        calibration_info=info, export_config=export_config, source=source, overwrite=overwrite,
                        progress=progress)
