"""keras_solo.runtime: the TF-free runtime (`keras-solo-runtime predict |
benchmark`, errors), run in subprocesses that must never import TensorFlow or
Keras, and `keras-solo benchmark` / `predict`, which use it."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from test_device_runtime import on_device
from test_export import exported, tiny_artifacts

pytestmark = pytest.mark.xdist_group("test_runner")  # one pytest-xdist worker builds the module fixtures once

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_runner(*args, cwd=None):
    """`keras-solo-runtime ARGS` in a fresh process from the checkout, with TensorFlow, Keras and the
    other frameworks unimportable (test_device_runtime.on_device)."""
    return on_device(REPO, *args, cwd=cwd)


def error_lines(proc):
    return [line for line in proc.stderr.strip().splitlines() if not line.startswith(("INFO:", "WARNING:"))]


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return tiny_artifacts(str(tmp_path_factory.getbasetemp() / "tiny_export"))


def test_source_checkout_script_runs_the_runtime(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "export", "litert_runner.py"), "benchmark", "--help"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and "--compare" in proc.stdout


# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_predict_image_without_tensorflow(art, fmt, tmp_path):
    model = exported(art, fmt)
    out = tmp_path / "pred"
    proc = run_runner("predict", model, "--source", art["image_path"], "--out", out, "--score", "0.2",
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "predicted 1 images" in proc.stdout
    records = json.load(open(out / "detections.json"))
    assert records[0]["source"] == "image.png"
    instances = records[0]["instances"]
    assert instances, "the test model detects something"
    from pycocotools import mask as mask_utils

    overlay = cv2.imread(str(out / "image.jpg"))
    assert overlay.shape == art["image"].shape
    for inst in instances:
        assert inst["score"] > 0.2 and inst["class"] in art["model"].class_names
        mask = mask_utils.decode(inst["segmentation"])  # COCO compressed RLE
        assert mask.shape == art["image"].shape[:2] and mask.sum() > 0
    # the overlay differs from the image inside the masks (JPEG noise aside)
    diff = np.abs(cv2.cvtColor(overlay, cv2.COLOR_BGR2RGB).astype(int) - art["image"].astype(int)).sum(axis=2)
    assert diff[mask.astype(bool)].mean() > 20


def test_predict_folder_and_video(art, tmp_path):
    model = exported(art, "tflite")
    frames = tmp_path / "frames"
    frames.mkdir()
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (150, 80))
    for i in range(3):
        frame = cv2.cvtColor(np.roll(art["image"], 10 * i, axis=1), cv2.COLOR_RGB2BGR)
        writer.write(frame)
        cv2.imwrite(str(frames / f"f{i}.png"), frame)
    writer.release()
    cv2.imwrite(str(frames / "f2.jpg"), cv2.imread(str(frames / "f0.png")))  # one stem, two files
    proc = run_runner("predict", model, "--source", frames, "--out", tmp_path / "dir")
    assert proc.returncode == 0, proc.stderr
    # f2.png and f2.jpg get an overlay each (one f2.jpg used to replace the other)
    assert sorted(os.listdir(tmp_path / "dir")) == ["detections.json", "f0.jpg", "f1.jpg", "f2_jpg.jpg", "f2_png.jpg"]
    assert len(json.load(open(tmp_path / "dir" / "detections.json"))) == 4
    proc = run_runner("predict", model, "--source", video, "--out", tmp_path / "vid")
    assert proc.returncode == 0, proc.stderr
    assert "predicted 3 frames" in proc.stdout
    capture = cv2.VideoCapture(str(tmp_path / "vid" / "clip_pred.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()
    assert len(json.load(open(tmp_path / "vid" / "detections.json"))) == 3
    proc = run_runner("predict", model, "--source", video, "--out", tmp_path / "vid")  # not empty
    assert proc.returncode == 2 and "already holds files" in error_lines(proc)[-1]


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_benchmark_reports_latency_rss_size_without_tensorflow(art, fmt, tmp_path):
    model = exported(art, fmt)
    out = tmp_path / "bench.json"
    proc = run_runner("benchmark", model, "--threads", "1", "--warmup", "1", "--runs", "5",
                      "--source", art["image_path"], "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.load(open(out))
    lat = result["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
    for part in ("preprocess_ms", "network_ms", "decode_ms"):
        assert 0 < result[part]["p50"] <= lat["p99"]
    assert result["network_ms"]["min"] + result["decode_ms"]["min"] <= lat["p99"]
    assert result["fps"] == pytest.approx(1000.0 / lat["mean"], rel=0.01)
    assert result["model_size_mb"] == pytest.approx(os.path.getsize(model) / 2**20, abs=1e-3)
    assert 20 < result["peak_rss_mb"] < 2000
    assert result["format"] == fmt and result["threads"] == 1 and result["runs"] == 5
    assert result["cpu_ms_per_run"] > 0 and len(result["loadavg_1m"]) == 2
    assert result["image_size"] == [150, 80] and result["input_size"] == [128, 64]
    assert result["gflops"] > 0 and result["achieved_gflops_per_s"] > 0
    assert "p50" in proc.stdout and "FPS" in proc.stdout
    assert result["cpu"]["cores"] >= 1 and result["cpu"]["model"] and "int8 instructions:" in proc.stdout


def test_bad_model_files_are_one_line_errors(art, tmp_path):
    model = exported(art, "tflite")
    cases = {}
    cases["missing"] = (tmp_path / "missing.tflite", "no such model file")
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"PK\x03\x04 this is a zip, not a flatbuffer" * 10)
    cases["garbage"] = (garbage, "not a TFLite flatbuffer")
    wrong = tmp_path / "wrong.tflite"
    wrong.write_bytes(open(model, "rb").read())
    meta = json.load(open(model + ".json"))
    meta["input_size"] = [96, 64]
    json.dump(meta, open(str(wrong) + ".json", "w"))
    cases["wrong size"] = (wrong, "input is 128x64 (WxH) but its metadata wrong.tflite.json says 96x64")
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x00\x01garbage")
    cases["bad onnx"] = (bad_onnx, "not a loadable ONNX model")
    cases["suffix"] = (tmp_path / "model.keras", "expected a .tflite or .onnx file")
    (tmp_path / "model.keras").write_bytes(b"x")
    for name, (path, message) in cases.items():
        proc = run_runner("benchmark", path, "--runs", "1")
        lines = error_lines(proc)
        assert proc.returncode == 2, name
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and message in lines[0], (name, lines)


def test_non_solo_tflite_and_missing_sidecar(tmp_path):
    import keras
    import tensorflow as tf

    inputs = keras.Input((32, 32, 3), batch_size=1)
    data = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))).convert()
    other = tmp_path / "other.tflite"
    other.write_bytes(data)
    proc = run_runner("benchmark", other, "--runs", "1")
    lines = error_lines(proc)
    assert proc.returncode == 2 and "not a keras-solo export" in lines[-1]
    assert any("not found; input 32x32 from the model" in line for line in lines)  # the sidecar warning
    gray = tmp_path / "gray.tflite"
    gray_in = keras.Input((32, 32, 1), batch_size=1)
    gray.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(gray_in, gray_in * 2)).convert())
    proc = run_runner("benchmark", gray, "--runs", "1")
    assert proc.returncode == 2 and "expected a (1, H, W, 3) float32 image" in error_lines(proc)[-1]


def test_runner_engine_matches_keras_detections_in_original_pixels(art):
    """Runtime detections (TFLite) == the Keras export graph's, after undoing the letterbox."""
    from keras_solo.engine import export_graph_engine
    from keras_solo.runtime.detections import boxes_from_masks
    from keras_solo.runtime.engine import open_engine

    engine = open_engine(exported(art, "tflite"), threads=1)
    found, timing = engine(art["image"], min_score=0.2)
    reference, _ = export_graph_engine(art["model_path"], threads=1, top_k=30)(art["image"], min_score=0.2)
    assert set(timing) == {"preprocess", "network", "decode", "total"}
    assert found["masks"].shape[1:] == art["image"].shape[:2]
    np.testing.assert_array_equal(found["labels"], reference["labels"])
    np.testing.assert_allclose(found["scores"], reference["scores"], atol=1e-3)
    for a, b in zip(found["masks"], reference["masks"]):
        assert np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()) > 0.99
    boxes = boxes_from_masks(found["masks"])
    np.testing.assert_allclose(found["boxes"], np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1))


def test_rle_and_percentiles_known_answers():
    from pycocotools import mask as mask_utils

    from keras_solo.runtime.bench import percentiles_ms
    from keras_solo.runtime.detections import encode_rle, rle_counts

    mask = np.zeros((4, 3), bool)
    mask[1:3, 1] = True
    mask[3, 2] = True
    assert rle_counts(mask).tolist() == [5, 2, 4, 1]  # column-major
    rle = encode_rle(mask)
    assert rle["size"] == [4, 3]
    np.testing.assert_array_equal(mask_utils.decode({**rle, "counts": rle["counts"].encode()}), mask)
    assert rle_counts(np.ones((2, 2), bool)).tolist() == [0, 4]
    stats = percentiles_ms([0.001, 0.002, 0.003, 0.004, 0.010])
    assert stats["min"] == 1.0 and stats["p50"] == 3.0 and stats["mean"] == 4.0
    assert stats["p90"] == pytest.approx(7.6) and stats["p99"] == pytest.approx(9.76)


def test_keras_solo_benchmark_calls_the_runner(art, tmp_path, capsys):
    from keras_solo.cli import main

    out = tmp_path / "bench.json"
    code = main(["benchmark", exported(art, "onnx"), "--threads", "1", "--warmup", "0", "--runs", "3",
                 "--data", os.path.join(art["data"], "instances_val.json"), "--json", str(out)])
    assert code == 0
    result = json.load(open(out))
    assert result["format"] == "onnx" and result["runs"] == 3 and result["latency_ms"]["p50"] > 0
    val = json.load(open(os.path.join(art["data"], "instances_val.json")))
    assert result["eval"]["num_images"] == len(val["images"]) > 0 and "AP" in result["eval"]["segm"]
    assert 20 < result["peak_rss_mb"] < 500  # the runner's own process, not this TensorFlow one
    printed = capsys.readouterr().out
    assert "latency ms" in printed and "mask AP" in printed
    assert main(["benchmark", str(tmp_path / "nope.tflite")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope.tflite'}: no such model file"
    # evaluation data whose images are missing fails up front, before any timing
    moved = tmp_path / "moved" / "instances_val.json"
    moved.parent.mkdir()
    moved.write_text(json.dumps(val))
    assert main(["benchmark", exported(art, "onnx"), "--runs", "1", "--data", str(moved)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().startswith(f"error: {moved}: image ") and "image file not found" in captured.err
    assert "latency ms" not in captured.out


def test_benchmark_compare_interleaves_onnx_peers_without_tensorflow(art, tmp_path):
    """`benchmark --compare`: our whole call and each peer in every round, ratio = ours / peer."""
    model = exported(art, "tflite")
    peer = exported(art, "onnx")  # any ONNX model stands in for a YOLO peer here
    out = tmp_path / "cmp.json"
    proc = run_runner("benchmark", model, "--threads", "1", "--warmup", "1", "--runs", "4", "--rounds", "2",
                      "--source", art["image_path"], "--compare", peer, "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.load(open(out))
    name = os.path.basename(peer)
    assert len(result["rounds"]) == 2 and result["peers"] == {name: [1, 64, 128, 3]}
    for row in result["rounds"]:
        assert row["ours"]["total"] >= row["ours"]["network"] > 0 and row["peers"][name] > 0
        assert row["ratio"][name] == pytest.approx(row["ours"]["total"] / row["peers"][name], rel=1e-2)
    assert "round 2" in proc.stdout and "ratio" in proc.stdout
    proc = run_runner("benchmark", model, "--compare", tmp_path / "missing.onnx")
    assert proc.returncode == 2 and error_lines(proc) == [f"error: {tmp_path / 'missing.onnx'}: no such peer model file"]


def test_profile_blocks_add_up_and_name_the_parts(art, tmp_path, capsys):
    """`benchmark --profile`: prefix timings give per-block times that sum to the whole model."""
    from keras_solo import litert_profile
    from keras_solo.cli import main

    model = exported(art, "tflite", "int8")
    result = litert_profile.profile_tflite(model, rounds=1, runs=2, warmup=1, progress=None)
    blocks = {row["block"]: row for row in result["blocks"]}
    assert {"backbone", "FPN", "decode: Matrix NMS, maskness, top max_det",
            "decode: candidate masks (gathered kernels, attention rows, resize)"} <= set(blocks)
    assert sum(row["ms"] for row in result["blocks"]) == pytest.approx(result["sum_ms"], abs=0.05)
    assert result["sum_ms"] == pytest.approx(result["full_ms"], abs=0.05)  # the last cut is the whole model
    assert sum(row["ops"] for row in result["blocks"]) == len(
        __import__("keras_solo.export", fromlist=["x"]).tflite_graph(open(model, "rb").read())["ops"])
    assert litert_profile.block_of("CONV_2D", "network/solo_1/solo_head_1/mask_conv_0_1/conv_1/convolution") \
        == "mask tower: conv"
    assert litert_profile.block_of("MEAN", "network/solo_1/solo_head_1/cate_conv_0_1/norm_1/Mean") \
        == "category tower: normalisation (GroupNorm ops)"
    assert main(["benchmark", model, "--profile", "--json", str(tmp_path / "p.json")]) == 0
    assert "whole model (p50)" in capsys.readouterr().out
    assert json.load(open(tmp_path / "p.json"))["blocks"]
    assert main(["benchmark", exported(art, "onnx"), "--profile"]) == 2
    assert "--profile reads a .tflite" in capsys.readouterr().err


def test_engine_preprocess_reuses_its_buffer_exactly(art):
    """The reused float input buffer equals a fresh letterbox for images of changing size."""
    from keras_solo.runtime.engine import open_engine
    from keras_solo.runtime.image import letterbox_image

    engine = open_engine(exported(art, "tflite"), threads=1)
    rng = np.random.default_rng(0)
    for h, w in [(80, 150), (64, 40), (200, 90), (64, 128), (30, 300)]:  # padding moves bottom <-> right
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        batch, scale = engine.preprocess(image)
        canvas, want_scale = letterbox_image(image, engine.input_size)
        assert scale == want_scale and batch.dtype == np.float32
        np.testing.assert_array_equal(batch[0], canvas.astype(np.float32))


def test_json_outputs_are_not_replaced_without_overwrite(art, tmp_path, capsys):
    """benchmark --json / the runner's --json / inspect-data --out keep an earlier result unless --overwrite."""
    from keras_solo.cli import main

    model = exported(art, "tflite")
    earlier = tmp_path / "bench.json"
    earlier.write_text("{}")
    proc = run_runner("benchmark", model, "--runs", "1", "--json", earlier)
    assert proc.returncode == 2 and error_lines(proc) == [f"error: {earlier}: already exists; use --overwrite or another --json"]
    assert main(["benchmark", model, "--runs", "1", "--json", str(earlier)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {earlier}: already exists; use --overwrite or another --json"
    assert earlier.read_text() == "{}"
    assert main(["benchmark", model, "--runs", "1", "--warmup", "0", "--json", str(earlier), "--overwrite"]) == 0
    assert json.load(open(earlier))["runs"] == 1
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    (overlays / "mine.png").write_bytes(b"x")
    data = os.path.join(art["data"], "instances_val.json")
    assert main(["inspect-data", data, "--out", str(overlays)]) == 2
    assert "already holds files; use --overwrite" in capsys.readouterr().err
    assert main(["inspect-data", data, "--out", str(overlays), "--overwrite"]) == 0


def _mjpg_video(path, frames=10, corrupt_middle=False):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (150, 80))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (80, 150, 3), dtype=np.uint8))
    writer.release()
    if corrupt_middle:  # frames in the middle overwritten: the reader stops there
        data = bytearray(path.read_bytes())
        start, stop = int(len(data) * 0.45), int(len(data) * 0.6)
        data[start:stop] = bytes(stop - start)
        path.write_bytes(bytes(data))
    return path


def test_video_that_ends_early_or_has_no_frames_says_so(art, tmp_path, capsys):
    """A damaged video: exit 0 with a warning naming how many frames were read; 0 frames: an error
    that says so (both used to pass silently / as a codec problem). keras-solo predict and the runner."""
    from keras_solo.cli import main

    damaged = _mjpg_video(tmp_path / "damaged.avi", corrupt_middle=True)
    capture = cv2.VideoCapture(str(damaged))
    readable = 0
    while capture.read()[0]:
        readable += 1
    capture.release()
    assert 0 < readable < 10  # the premise: OpenCV stops early on this file
    proc = run_runner("predict", exported(art, "tflite"), "--source", damaged, "--out", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {damaged}: the file ended early: read {readable} of 10 frames" in proc.stderr
    assert main(["predict", "--model", art["model_path"], "--source", str(damaged), "--out", str(tmp_path / "k")]) == 0
    assert f"the file ended early: read {readable} of 10 frames" in capsys.readouterr().err
    empty = _mjpg_video(tmp_path / "empty.avi", frames=0)
    proc = run_runner("predict", exported(art, "tflite"), "--source", empty, "--out", tmp_path / "e")
    assert proc.returncode == 2 and error_lines(proc) == [f"error: {empty}: holds no frames (0 frames in the container)"]
    assert main(["predict", "--model", art["model_path"], "--source", str(empty), "--out", str(tmp_path / "e2")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {empty}: holds no frames (0 frames in the container)"


def test_runner_out_naming_a_file_is_one_line(art, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    proc = run_runner("predict", exported(art, "tflite"), "--source", art["image_path"], "--out", taken)
    assert proc.returncode == 2
    assert error_lines(proc) == [f"error: {taken}: exists and is not a folder; --out must name a folder"]
    assert taken.read_text() == "mine"


def test_keras_solo_predict_and_evaluate_take_exports_through_the_same_loop(art, tmp_path, capsys):
    """`keras-solo predict` / `evaluate` run a .keras model and its export through the runtime's loops:
    one record layout."""
    from keras_solo.cli import main

    records = {}
    for name, model in (("keras", art["model_path"]), ("tflite", exported(art, "tflite"))):
        out = tmp_path / f"pred_{name}"
        assert main(["predict", "--model", model, "--source", art["image_path"], "--out", str(out),
                     "--score", "0.2"]) == 0, capsys.readouterr().err
        records[name] = json.load(open(out / "detections.json"))
        assert sorted(os.listdir(out)) == ["detections.json", "image.jpg"]
    # (the .keras model decodes with its config's candidate budget, the export with top_k 30: the same
    # record layout, not necessarily the same detections)
    assert records["keras"][0]["instances"] and records["tflite"][0]["instances"]
    assert set(records["keras"][0]["instances"][0]) == set(records["tflite"][0]["instances"][0])
    data = os.path.join(art["data"], "instances_val.json")
    assert main(["evaluate", "--model", exported(art, "onnx"), "--data", data, "--out", str(tmp_path / "ev")]) == 0
    metrics = json.load(open(tmp_path / "ev" / "metrics.json"))
    assert metrics["num_images"] > 0 and set(metrics["ms_per_image"]) == {"preprocess", "network", "decode"}
    capsys.readouterr()
    assert main(["evaluate", "--model", exported(art, "onnx"), "--data", data, "--out", str(tmp_path / "ev2"),
                 "--set", "eval.score_thr=0.1"]) == 2
    assert "--set applies to .keras models" in capsys.readouterr().err


def test_keras_solo_without_the_training_install_is_one_line(tmp_path):
    """`keras-solo train` where TensorFlow / Keras are not installed: one line naming the extra."""
    blocker = ("import importlib.abc, sys\n"
               "class B(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('tensorflow', 'keras', 'yaml'):\n"
               "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
               "sys.meta_path.insert(0, B())\n"
               "from keras_solo.cli import main\n"
               "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", blocker, "train", "--config", "x.yaml"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: keras-solo train needs the training install, which lacks yaml: pip install 'keras-solo[train]' "
        "(exported models run without it: keras-solo-runtime)"]


def test_cpu_info_names_the_model_and_its_int8_instruction_sets():
    """x86 flags and Arm features of /proc/cpuinfo (the first processor's), and "none of" when absent."""
    from keras_solo.runtime.bench import cpu_info, format_cpu

    epyc = ("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n\n"
            "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx512_vnni\n")
    info = cpu_info(epyc)
    assert info["model"] == "AMD EPYC 7B13" and info["int8_isa"] == ["avx2", "fma"]
    xeon = "model name : Intel Xeon\nflags : avx2 fma avx512f avx512_vnni amx_bf16 amx_int8 amx_tile\n"
    assert cpu_info(xeon)["int8_isa"] == ["avx2", "fma", "avx512f", "avx512_vnni", "amx_int8"]
    arm = "processor : 0\nFeatures : fp asimd asimddp i8mm\nCPU part : 0xd42\n"
    info = cpu_info(arm)
    assert info["model"] == "Arm CPU part 0xd42" and info["int8_isa"] == ["asimddp", "i8mm"]
    line = format_cpu(cpu_info("model name : Old\nflags : sse2\n"))
    assert line.startswith("cpu: Old, ") and "int8 instructions: none of avx2" in line
