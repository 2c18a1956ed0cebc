"""The model, targets, losses, `fit` and the `train` / `evaluate` commands on
Keras' JAX backend: the same tiny model and batch give the same loss as on
TensorFlow; a JAX-trained `.keras` exports to int8 TFLite under TensorFlow;
training on JAX needs no TensorFlow. The JAX side runs in subprocesses (a
Keras process has one backend). All of them are `slow` (make test-slow, CI):
JAX compiles each operation of a model's set-up on first use."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import fixed_batch, tiny_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                reason="jax is not installed (pip install keras-solo[jax])")

HERE = os.path.dirname(os.path.abspath(__file__))

# Builds the tiny model, loads WEIGHTS and fits 3 epochs of the fixed batch: the first epoch's
# loss is the training-mode loss of the batch before any update (one step per epoch). Only
# the compiled train step runs on JAX (op-by-op eager JAX costs ~30 s of compiling here).
PROBE = r"""
import json, os, sys
sys.path.insert(0, os.environ["TESTS"])
import keras
from helpers import fixed_batch, tiny_config
from keras_solo import builders
from keras_solo.train import build_optimizer

config = tiny_config()
model = builders.build_model(config)
model.load_weights(os.environ["WEIGHTS"])
x, y = fixed_batch(config)
model.compile(optimizer=build_optimizer(config.train, 1))
fit = model.fit(x, y, batch_size=2, epochs=3, shuffle=False, verbose=0).history["loss"]
print("RESULT " + json.dumps({"backend": keras.backend.backend(), "fit": fit}))
"""


def _probe(backend, weights):
    env = dict(os.environ, KERAS_BACKEND=backend, TESTS=HERE, WEIGHTS=str(weights), TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow  # make test-all / CI's make test-slow: JAX compiles every op of the model's set-up (~45 s CPU)
def test_same_loss_on_tensorflow_and_jax(tmp_path):
    """The training-mode loss of one batch from the same weights: TensorFlow here, JAX in a subprocess
    (its first `fit` step); then JAX's `fit` lowers it."""
    from keras_solo import builders

    config = tiny_config()
    model = builders.build_model(config)
    weights = tmp_path / "tiny.weights.h5"
    model.save_weights(str(weights))
    x, y = fixed_batch(config)
    tf_loss = float(model.compute_loss(x, y, model(x, training=True), training=True))
    jax_result = _probe("jax", weights)
    assert jax_result["backend"] == "jax"
    assert np.isfinite(tf_loss) and tf_loss > 0
    losses = jax_result["fit"]
    np.testing.assert_allclose(losses[0], tf_loss, rtol=1e-5)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses


def _cli(args, backend, cwd):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "keras_solo.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=400)


@pytest.mark.slow  # make test-all / CI's make test-slow
def test_train_and_evaluate_on_jax_then_export_int8_on_tensorflow(synthetic, tmp_path):
    from helpers import TINY_MODEL_OVERRIDES

    run = tmp_path / "run"
    args = ["train", "--config", os.path.join(os.path.dirname(HERE), "training", "demo.yaml"), "--out", str(run)]
    for item in (*TINY_MODEL_OVERRIDES, "train.epochs=2", "train.steps_per_epoch=3", "train.batch_size=2",
                 "train.eval_every=2", f"data.train_json={synthetic / 'instances_train.json'}",
                 f"data.val_json={synthetic / 'instances_val.json'}"):
        args += ["--set", item]
    trained = _cli(args, "jax", tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Epoch 2/2" in trained.stdout and "val segm AP" in trained.stdout, trained.stdout[-2000:]
    assert (run / "DONE").exists() and (run / "best.keras").exists()

    evaluated = _cli(["evaluate", "--model", str(run / "best.keras"), "--data", str(synthetic / "instances_val.json"),
                      "--out", str(tmp_path / "eval")], "jax", tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["segm"]["AP"] >= 0

    export = ["export", "--model", str(run / "best.keras"), "--format", "tflite", "--quant", "int8",
              "--calib-data", str(synthetic / "instances_train.json"), "--out", str(tmp_path / "m.tflite")]
    refused = _cli(export, "jax", tmp_path)
    assert refused.returncode == 2 and "needs Keras' TensorFlow backend" in refused.stderr, refused.stderr[-2000:]
    exported = _cli(export, "tensorflow", tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "m.tflite").stat().st_size > 0
    assert json.loads((tmp_path / "m.tflite.json").read_text())["quant"] == "int8"


@pytest.mark.slow  # make test-all / CI's make test-slow
def test_jax_training_needs_no_tensorflow(synthetic, tmp_path):
    """The device recipe: Keras on JAX with TensorFlow unimportable (the PyDataset input,
    no TensorBoard, COCO AP during training)."""
    from helpers import TINY_MODEL_OVERRIDES

    run = tmp_path / "run"
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "import runpy; sys.argv = ['keras-solo'] + sys.argv[1:]\n"
            "runpy.run_module('keras_solo.cli', run_name='__main__')")
    args = ["train", "--config", os.path.join(os.path.dirname(HERE), "training", "demo.yaml"), "--out", str(run)]
    for item in (*TINY_MODEL_OVERRIDES, "train.epochs=2", "train.steps_per_epoch=3", "train.batch_size=2",
                 "train.eval_every=2", f"data.train_json={synthetic / 'instances_train.json'}",
                 f"data.val_json={synthetic / 'instances_val.json'}"):
        args += ["--set", item]
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TensorBoard logs skipped: TensorFlow is not installed" in proc.stdout
    assert "val segm AP" in proc.stdout and (run / "DONE").exists() and (run / "best.keras").exists()
    assert not (run / "logs").exists()
