"""The runtime as a device gets it: a folder holding only the runtime's files
(test_architecture.RUNTIME_FILES) on PYTHONPATH, with tensorflow, keras, jax,
pycocotools and the rest of keras_solo unimportable, runs `keras-solo-runtime`
predict and benchmark on exported tiny models; a missing model runtime is a
one-line error naming what to install."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_architecture import ROOT, RUNTIME_FILES
from test_export import exported, tiny_artifacts

pytestmark = pytest.mark.xdist_group("test_device_runtime")  # one pytest-xdist worker builds the module fixtures once

# Blocks the given top-level packages, runs the runtime's command, then checks
# that every keras_solo module came from the device folder.
_DEVICE = """
import importlib.abc, runpy, sys
device, blocked = sys.argv[1], set(sys.argv[2].split(","))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Block())
sys.path.insert(0, device)
sys.argv = ["keras-solo-runtime"] + sys.argv[3:]
code = 0
try:
    runpy.run_module("keras_solo.runtime.cli", run_name="__main__")
except SystemExit as e:
    code = e.code or 0
strays = [m.__file__ for n, m in sys.modules.items()
          if n.split(".")[0] == "keras_solo" and getattr(m, "__file__", None) and not m.__file__.startswith(device)]
print("STRAYS=" + ",".join(strays))
sys.exit(code)
"""
BLOCKED = ("tensorflow", "keras", "tf_keras", "jax", "torch", "pycocotools", "yaml", "tf2onnx", "onnx")


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return tiny_artifacts(str(tmp_path_factory.getbasetemp() / "tiny_export"))


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """The runtime's files alone, as a wheel of the runtime would place them."""
    folder = tmp_path_factory.mktemp("device")
    for rel in RUNTIME_FILES:
        source = os.path.join(ROOT, rel)
        if rel.endswith("/"):
            shutil.copytree(source, folder / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            os.makedirs(folder / os.path.dirname(rel), exist_ok=True)
            shutil.copy(source, folder / rel)
    return folder


def on_device(device, *args, blocked=BLOCKED, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", _DEVICE, str(device), ",".join(blocked), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env)
    strays = [line for line in proc.stdout.splitlines() if line.startswith("STRAYS=")]
    assert strays == ["STRAYS="], f"keras_solo modules from outside the device folder: {strays}\n{proc.stderr}"
    return proc


def test_predict_and_benchmark_with_only_the_runtime(art, device, tmp_path):
    model = exported(art, "tflite", "int8")
    for rel in (os.path.basename(model), os.path.basename(model) + ".json"):  # the model and its sidecar copied over
        shutil.copy(os.path.join(os.path.dirname(model), rel), device / rel)
    proc = on_device(device, "predict", device / os.path.basename(model), "--source", art["image_path"],
                     "--out", tmp_path / "pred", "--score", "0.2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = json.load(open(tmp_path / "pred" / "detections.json"))
    assert records[0]["source"] == "image.png" and records[0]["instances"]
    assert all(isinstance(i["segmentation"]["counts"], str) for i in records[0]["instances"])  # COCO RLE strings
    assert os.path.exists(tmp_path / "pred" / "image.jpg")
    onnx = exported(art, "onnx")
    proc = on_device(device, "benchmark", onnx, "--threads", "1", "--warmup", "0", "--runs", "2",
                     "--json", tmp_path / "bench.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.load(open(tmp_path / "bench.json"))
    assert result["format"] == "onnx" and result["runs"] == 2 and result["latency_ms"]["p50"] > 0


def test_track_with_only_the_runtime(art, device, tmp_path):
    """`keras-solo-runtime track` on a clip of the test image: the streaming pipeline and the tracker
    need no TensorFlow or Keras."""
    import cv2

    model = exported(art, "tflite")
    clip = tmp_path / "clip.avi"
    height, width = art["image"].shape[:2]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (width, height))
    for shift in range(6):  # the image moving right by 2 pixels a frame
        writer.write(cv2.cvtColor(np.roll(art["image"], 2 * shift, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    proc = on_device(device, "track", model, "--source", clip, "--out", tmp_path / "track", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "6 frames in" in proc.stdout and "capture -> result" in proc.stdout
    records = json.load(open(tmp_path / "track" / "tracks.json"))
    assert [r["frame"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert {os.path.basename(p) for p in (tmp_path / "track").iterdir()} == {"clip_track.mp4", "tracks.json",
                                                                              "tracks_mot.txt"}


@pytest.mark.parametrize("fmt,module,pip", [("onnx", "onnxruntime", "onnxruntime"),
                                            ("tflite", "ai_edge_litert", "ai-edge-litert")])
def test_a_missing_model_runtime_is_one_line_naming_what_to_install(art, device, tmp_path, fmt, module, pip):
    model = exported(art, fmt)
    proc = on_device(device, "benchmark", model, "--runs", "1", blocked=BLOCKED + (module,), cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == (f"error: {model}: running a .{fmt} model needs {pip}, which is not installed "
                        f"(pip install {pip})")


@pytest.mark.slow
def test_pip_install_runtime_pulls_no_tensorflow(tmp_path):
    """`pip install .[runtime]` into an empty venv (needs the package index): no TensorFlow, no Keras,
    and the `keras-solo-runtime` command."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    proc = subprocess.run(pip + ["install", "-q", f"{ROOT}[runtime]"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    installed = subprocess.run(pip + ["list", "--format", "json"], capture_output=True, text=True).stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert {"keras-solo", "numpy", "opencv-python-headless", "ai-edge-litert"} <= names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "jax", "torch", "pycocotools"}, names
    proc = subprocess.run([str(venv / "bin" / "keras-solo-runtime"), "predict", "--help"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "--source" in proc.stdout
