"""The public Python API (`import keras_solo`) and the scripts of examples/,
run as a user runs them (their own processes; predict_folder.py on an export
in this one, as it needs no TensorFlow start-up), on tiny synthetic data, so
they cannot rot."""

import json
import os
import runpy
import subprocess
import sys

import cv2
import numpy as np
import pytest

import keras_solo
from keras_solo.errors import SoloError

pytestmark = pytest.mark.xdist_group("test_api")  # one pytest-xdist worker builds the module fixtures once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD = {"label", "class", "score", "bbox_xywh", "segmentation"}  # what detect gives for every format


def test_every_public_name_resolves_and_the_runtime_stays_light():
    from keras_solo import api

    assert keras_solo.__all__ == api.__all__
    for name in keras_solo.__all__:
        assert getattr(keras_solo, name) is not None, name
        assert (getattr(keras_solo, name).__doc__ or "").strip(), f"{name} has no docstring"
    assert {"demo", "edge", "paper"} <= set(keras_solo.preset_names())
    with pytest.raises(AttributeError):
        keras_solo.no_such_name  # noqa: B018
    # importing the runtime through the package does not load the API (TensorFlow, Keras)
    code = "import sys, keras_solo.runtime.engine; print('keras' in sys.modules, 'keras_solo.api' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.split() == ["False", "False"], proc.stderr


def test_from_preset_and_compile_without_an_optimizer_train_with_the_presets_schedule(synthetic, tmp_path):
    model = keras_solo.SOLO.from_preset("demo", class_names=("car", "bus"), overrides=["train.batch_size=2"])
    assert model.num_classes == 2 and model.class_names == ("car", "bus") and model.built
    data = keras_solo.coco_dataset(os.path.join(synthetic, "instances_train.json"), model=model, training=True)
    steps = len(list(data))  # a finite pass: one epoch
    assert steps == 3  # 6 training images of 8, batch 2
    model.compile()
    model.fit(data, epochs=2, verbose=0)
    schedule = model.optimizer.learning_rate if not hasattr(model.optimizer, "_learning_rate") \
        else model.optimizer._learning_rate
    assert type(model.optimizer).__name__ == "AdamW"  # demo preset: adamw, cosine
    assert schedule.kind == "cosine" and schedule.total_steps == 2 * steps
    assert int(model.optimizer.iterations.numpy()) == 2 * steps
    # detect: the same records from a loop of calls (the engine is compiled once), clear errors
    image = os.path.join(synthetic, "val", sorted(os.listdir(os.path.join(synthetic, "val")))[0])
    keras_solo.detect(model, image)
    model.decoder = model.decoder.replace(score_thr=0.0, update_thr=0.0)  # a new decoder: a new engine
    first, again = (keras_solo.detect(model, image, score=0.0) for _ in range(2))
    assert len(first) == len(again) > 0 and [d["score"] for d in first] == [d["score"] for d in again]
    assert set(first[0]) == RECORD | {"mask"} and first[0]["mask"].shape == (64, 128)
    with pytest.raises(SoloError, match=r"expected \(h, w, 3\) uint8 RGB"):
        keras_solo.detect(model, np.zeros((64, 128), np.uint8))
    # the engine detect runs is public: the same detections, and its settings for a file only
    found, seconds = keras_solo.load_engine(model)(cv2.cvtColor(cv2.imread(image), cv2.COLOR_BGR2RGB), 0.0)
    assert [round(float(v), 4) for v in found["scores"]] == [d["score"] for d in first] and seconds["total"] > 0
    with pytest.raises(SoloError, match="overrides= applies to a .keras path"):
        keras_solo.load_engine(model, overrides=["eval.score_thr=0.2"])
    with pytest.raises(SoloError, match="give format="):
        keras_solo.export_model(model, "model.pt")
    with pytest.raises(SoloError, match="image file not found: .*images= is the folder"):
        keras_solo.coco_dataset(os.path.join(synthetic, "instances_val.json"), "no_such_folder", model=model)
    # a model read from a file has no preset: compile() says to pass an optimizer (not rmsprop in silence)
    model.save(tmp_path / "saved.keras")
    loaded = keras_solo.load_model(tmp_path / "saved.keras")
    with pytest.raises(SoloError, match=r"pass one, e.g. model.compile\(optimizer="):
        loaded.compile()


ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_example(name, *args, cwd):
    """Runs examples/NAME as a user does, in its own process; returns what it printed."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *map(str, args)],
                          capture_output=True, text=True, env=ENV, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """A tiny synthetic set made as the README says, shared by the example scripts."""
    root = tmp_path_factory.mktemp("examples")
    proc = subprocess.run([sys.executable, "-m", "keras_solo.cli", "make-synthetic", "--out", str(root / "data"),
                           "--images", "12", "--size", "256x128"], capture_output=True, text=True, env=ENV, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.mark.slow  # make test-all / CI: three example scripts end to end (~50 s); finetune.py below stays in make test
def test_fit_then_predict_export_then_predict_folder(examples, monkeypatch):
    """examples/fit.py, predict_export.py (int8, the runtime), predict_folder.py (on the export)."""
    root, data = examples, examples / "data"
    model = root / "runs" / "m.keras"
    stdout = run_example("fit.py", "--data", data, "--epochs", 2, "--out", model, cwd=root)
    assert model.exists() and (root / "runs" / "m_log.csv").exists()
    assert "segm {'AP':" in stdout
    tflite = root / "runs" / "m_int8.tflite"
    stdout = run_example("predict_export.py", "--model", model, "--data", data, "--out", tflite, cwd=root)
    assert tflite.exists() and "instances in" in stdout and f"wrote {tflite}" in stdout
    out = root / "runs" / "detections.json"  # in this process: an export needs no TensorFlow start-up of its own
    monkeypatch.setattr(sys, "argv", ["predict_folder.py", "--model", str(tflite), "--images", str(data / "val"),
                                      "--score", "0", "--out", str(out)])
    runpy.run_path(os.path.join(ROOT, "examples", "predict_folder.py"), run_name="__main__")
    records = json.loads(out.read_text())
    assert [os.path.basename(r["source"]) for r in records] == sorted(os.listdir(data / "val"))
    assert all(set(d) == RECORD for r in records for d in r["instances"])


def test_finetune_on_your_classes(examples):
    """examples/finetune.py with a small preset: 3 of the 5 classes, its own callback, the model saved."""
    data, out = examples / "data", examples / "ft" / "cars.keras"
    run_example("finetune.py", "--train", data / "instances_train.json", "--val", data / "instances_val.json",
                "--classes", "car,truck,bus", "--preset", "demo", "--set", "train.batch_size=4", "--epochs", 1,
                "--out", out, cwd=examples)
    assert keras_solo.load_model(out).class_names == ("car", "truck", "bus")
