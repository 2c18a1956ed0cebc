"""The public Python API (`import keras_solo`) and the scripts of examples/,
run as a user runs them (subprocesses, tiny synthetic data) so they cannot rot."""

import os
import subprocess
import sys

import pytest

import keras_solo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_public_name_resolves_and_the_runtime_stays_light():
    for name in keras_solo.__all__:
        assert getattr(keras_solo, name) is not None, name
    assert {"demo", "edge", "paper"} <= set(keras_solo.preset_names())
    with pytest.raises(AttributeError):
        keras_solo.no_such_name  # noqa: B018
    # importing the runtime through the package does not load the API (TensorFlow, Keras)
    code = "import sys, keras_solo.runtime.engine; print('keras' in sys.modules, 'keras_solo.api' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.split() == ["False", "False"], proc.stderr


def test_from_preset_and_compile_without_an_optimizer_train_with_the_presets_schedule(synthetic):
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


def test_the_examples_run(tmp_path):
    """examples/fit.py then examples/predict_export.py, on a tiny synthetic set, as the README says."""
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "keras_solo.cli", "make-synthetic", "--out", str(data), "--images",
                           "12", "--size", "256x128"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    model = tmp_path / "runs" / "m.keras"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "fit.py"), "--data", str(data),
                           "--epochs", "2", "--out", str(model)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert model.exists() and (tmp_path / "runs" / "m_log.csv").exists()
    assert "segm {'AP':" in proc.stdout
    tflite = tmp_path / "runs" / "m_int8.tflite"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "predict_export.py"), "--model", str(model),
                           "--data", str(data), "--out", str(tflite)], capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tflite.exists() and "instances in" in proc.stdout and f"wrote {tflite}" in proc.stdout
