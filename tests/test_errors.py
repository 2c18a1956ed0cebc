"""The bad-input catalogue of docs/ERRORS.md: one test per entry.

Every entry runs the `keras-solo` command a user would run (in-process through
`keras_solo.cli.main`, which is what the console script calls) and checks:
exit code 2, the last stderr line is ``error: <message>``, the message is one
line naming the file (and key / image id) and the problem, and no traceback.
Two entries run the real console script in a subprocess, where the process
itself matters (a traceback printed by TensorFlow, a hang at exit).

`CASES` maps each catalogue id to a function that prepares the input in a
fresh folder and returns ``(argv, needles)``; ``test_catalogue_lists_every_case``
keeps docs/ERRORS.md and this table in step.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
from helpers import TINY_MODEL_OVERRIDES, write_json, write_tiny_coco

from keras_solo.cli import main
from keras_solo.errors import SoloError

pytestmark = pytest.mark.xdist_group("test_errors")  # one pytest-xdist worker builds the module fixtures once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "training", "demo.yaml")
ERRORS_MD = os.path.join(ROOT, "docs", "ERRORS.md")


# ---------------------------------------------------------------------------
# Shared inputs (written once per module; each case copies what it changes)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from keras_solo.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("base")
    make_synthetic(str(root / "syn"), images=6, size=(128, 64), seed=0)
    write_tiny_coco(root / "tiny")
    return root


def _copy_synthetic(base, folder):
    target = folder / "syn"
    shutil.copytree(base / "syn", target)
    return target


def _train_argv(data_dir, out, *extra):
    argv = ["train", "--config", DEMO, "--out", str(out)]
    for item in (*TINY_MODEL_OVERRIDES, "train.steps_per_epoch=1", "train.batch_size=2", "train.epochs=1",
                 f"data.train_json={data_dir / 'instances_train.json'}",
                 f"data.val_json={data_dir / 'instances_val.json'}", *extra):
        argv += ["--set", item]
    return argv


def _first_train_image(data_dir):
    data = json.loads((data_dir / "instances_train.json").read_text())
    image = data["images"][0]
    return data, image, data_dir / image["file_name"]


def _tiny_json(base, folder, change):
    """A copy of the tiny COCO JSON (images stay in base) changed by `change`."""
    data = json.loads((base / "tiny" / "instances.json").read_text())
    change(data)
    return write_json(str(base / "tiny" / f"{folder.name}.json"), data)


def _keras_file(path, layer):
    import keras

    model = keras.Sequential([keras.Input((4,)), layer])
    model.save(path)
    return str(path)


def _zip_keras(path, config):
    """A .keras archive whose config.json is `config` (nothing else valid)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.0", "date_saved": "2025"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", b"")
    return str(path)


def _evaluate_argv(base, model, folder):
    return ["evaluate", "--model", str(model), "--data", str(base / "syn" / "instances_val.json"),
            "--out", str(folder / "eval")]


# ---------------------------------------------------------------------------
# The catalogue: id -> prepare(base, folder) -> (argv, needles)

CASES = {}
HELD_LOCKS = []


def case(name):
    def register(func):
        CASES[name] = func
        return func

    return register


def _config(folder, text):
    path = folder / "c.yaml"
    path.write_text(text)
    return path


@case("config-missing")
def _(base, folder):
    return ["config", "--config", str(folder / "nope.yaml")], ["nope.yaml", "no such config file"]


@case("config-not-yaml")
def _(base, folder):
    path = _config(folder, "train:\n  epochs: [1, 2\n")
    return ["config", "--config", str(path)], [str(path), "not valid YAML at line"]


@case("config-python-tag")
def _(base, folder):
    path = _config(folder, "model: !!python/object/apply:os.system ['touch pwned']\n")
    return ["config", "--config", str(path)], [str(path), "not valid YAML", "python/object", "safe_load"]


@case("config-empty")
def _(base, folder):
    path = _config(folder, "# only a comment\n")
    return ["config", "--config", str(path)], [f"{path}: empty config (no keys)"]


@case("config-empty-section")
def _(base, folder):
    path = _config(folder, "model:\n")
    return ["config", "--config", str(path)], [f"{path}: empty config (only empty sections: model)"]


@case("train-val-json-missing")
def _(base, folder):
    data = _copy_synthetic(base, folder)
    missing = data / "instances_vla.json"
    return (_train_argv(data, folder / "run", f"data.val_json={missing}"),
            [f"{missing}: "])


@case("config-not-a-mapping")
def _(base, folder):
    path = _config(folder, "- model\n- train\n")
    return ["config", "--config", str(path)], [str(path), "expected a mapping of sections"]


@case("config-section-not-a-mapping")
def _(base, folder):
    path = _config(folder, "train: 5\n")
    return ["config", "--config", str(path)], [str(path), "train: expected a mapping, got int"]


@case("config-unknown-key")
def _(base, folder):
    path = _config(folder, "train:\n  lerning_rate: 0.1\n")
    return ["config", "--config", str(path)], [f"{path}: train.lerning_rate: unknown key (did you mean learning_rate?)"]


@case("config-wrong-type")
def _(base, folder):
    path = _config(folder, "train:\n  epochs: ten\n")
    return ["config", "--config", str(path)], [f"{path}: train.epochs: expected an integer, got 'ten'"]


@case("config-out-of-range")
def _(base, folder):
    path = _config(folder, "eval:\n  score_thr: 1.5\n")
    return ["config", "--config", str(path)], [f"{path}: eval.score_thr: 1.5 must be in [0, 1)"]


@case("config-not-finite")
def _(base, folder):
    return (["config", "--set", "train.weight_decay=.inf"],
            ["<defaults> (with --set): train.weight_decay: expected a finite number, got inf"])


@case("config-cross-field")
def _(base, folder):
    path = _config(folder, "model:\n  grids: [8, 4]\n")
    return ["config", "--config", str(path)], [f"{path}: model.grids: has 2 entries but model.levels has 5"]


@case("set-malformed")
def _(base, folder):
    return ["config", "--set", "train.epochs"], ["--set 'train.epochs': expected dotted.key=value"]


@case("set-not-a-section")
def _(base, folder):
    path = _config(folder, "train:\n  epochs: 3\n")
    return (["config", "--config", str(path), "--set", "train.epochs.x=1"],
            ["--set train.epochs.x: epochs is not a section"])


@case("set-python-tag")
def _(base, folder):
    return (["config", "--set", "train.epochs=!!python/object/apply:os.system ['touch pwned']"],
            ["--set", "value is not valid YAML: refused a tag"])


@case("json-missing")
def _(base, folder):
    return ["inspect-data", str(folder / "nope.json")], [f"{folder / 'nope.json'}: file not found"]


@case("json-not-json")
def _(base, folder):
    path = folder / "a.json"
    path.write_text("images: []\n")
    return ["inspect-data", str(path)], [str(path), "not valid JSON"]


@case("json-truncated")
def _(base, folder):
    text = (base / "tiny" / "instances.json").read_text()
    path = folder / "cut.json"
    path.write_text(text[: len(text) // 2])
    return ["inspect-data", str(path)], [str(path), "not valid JSON", "truncated?"]


@case("json-missing-keys")
def _(base, folder):
    path = write_json(str(folder / "a.json"), {"images": []})
    return ["inspect-data", path], [path, "missing 'annotations', 'categories'"]


@case("json-wrong-type")
def _(base, folder):
    path = write_json(str(folder / "a.json"), {"images": {}, "annotations": [], "categories": []})
    return ["inspect-data", path], [path, "'images' must be a list, got dict"]


@case("json-no-images")
def _(base, folder):
    path = write_json(str(folder / "a.json"), {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]})
    return ["inspect-data", path], [path, "no images"]


@case("json-unknown-image")
def _(base, folder):
    path = _tiny_json(base, folder, lambda d: d["annotations"][0].update(image_id=99))
    return ["inspect-data", path], [path, "annotation 1: unknown image_id 99"]


@case("json-unknown-category")
def _(base, folder):
    path = _tiny_json(base, folder, lambda d: d["annotations"][1].update(category_id=42))
    return ["inspect-data", path], [path, "image 1: annotation 2: unknown category_id 42"]


@case("json-duplicate-file-name")
def _(base, folder):
    def change(d):
        d["images"][1]["file_name"] = d["images"][0]["file_name"]
    path = _tiny_json(base, folder, change)
    data = json.loads(open(path).read())
    first, second = data["images"][0], data["images"][1]
    return ["inspect-data", path], [path, f"image {second['id']}: file_name {first['file_name']!r} is also image "
                                          f"{first['id']}"]


@case("json-duplicate-image-id")
def _(base, folder):
    path = _tiny_json(base, folder, lambda d: d["images"][1].update(id=1))
    return ["inspect-data", path], [path, "image 1: duplicate image id"]


@case("json-bad-id")
def _(base, folder):
    path = _tiny_json(base, folder, lambda d: d["images"][0].update(id=1.5))
    return ["inspect-data", path], [path, "images[0]: 'id' must be an integer, got 1.5"]


@case("json-size-out-of-range")
def _(base, folder):
    path = _tiny_json(base, folder, lambda d: d["images"][0].update(width=2**21))
    return ["inspect-data", path], [path, "image 1: 'width' must be <= 1048576, got 2097152"]


@case("json-rle-size")
def _(base, folder):
    path = _tiny_json(base, folder, lambda d: d["annotations"][3]["segmentation"].update(size=[10, 10]))
    return ["inspect-data", path], [path, "image 2: annotation 4: RLE size [10, 10] does not match"]


@case("json-rle-malformed")
def _(base, folder):
    path = _tiny_json(base, folder, lambda d: d["annotations"][3]["segmentation"].update(counts="PP"))
    return ["inspect-data", path], [path, "image 2: annotation 4: malformed compressed RLE"]


@case("json-file-name-escapes")
def _(base, folder):
    path = _tiny_json(base, folder, lambda d: d["images"][0].update(file_name="../../x.jpg"))
    return ["inspect-data", path], [path, "image 1: file_name '../../x.jpg' escapes the image root"]


@case("json-file-name-absolute")
def _(base, folder):
    path = _tiny_json(base, folder, lambda d: d["images"][0].update(file_name="/etc/passwd"))
    return ["inspect-data", path], [path, "image 1: file_name '/etc/passwd' escapes the image root"]


@case("json-file-name-nul")
def _(base, folder):
    path = _tiny_json(base, folder, lambda d: d["images"][0].update(file_name="a\u0000.png"))
    return ["inspect-data", path], [path, "image 1: file_name", "contains a NUL character"]


@case("json-nested-too-deep")
def _(base, folder):
    path = folder / "deep.json"
    path.write_text("[" * 100000 + "]" * 100000)
    return ["inspect-data", str(path)], [str(path), "nested too deeply"]


@case("json-number-out-of-range")
def _(base, folder):
    data = json.loads((base / "tiny" / "instances.json").read_text())
    data["annotations"][0]["area"] = 12345.5
    path = folder / "big.json"
    path.write_text(json.dumps(data).replace("12345.5", "1" + "0" * 400))
    return ["inspect-data", str(path)], [str(path), "image 1: annotation 1: 'area' is out of range"]


@case("polygon-invalid-strict")
def _(base, folder):
    data_dir = _copy_synthetic(base, folder)
    data = json.loads((data_dir / "instances_train.json").read_text())
    ann = data["annotations"][0]
    ann["segmentation"] = [[1, 1, 5, 5]]
    write_json(str(data_dir / "instances_train.json"), data)
    return (_train_argv(data_dir, folder / "run", "data.strict=true"),
            [str(data_dir / "instances_train.json"), f"annotation {ann['id']}",
             "polygon with fewer than 3 points (2) (strict=True)"])


@case("image-missing")
def _(base, folder):
    data_dir = _copy_synthetic(base, folder)
    _, image, path = _first_train_image(data_dir)
    os.remove(path)
    return _train_argv(data_dir, folder / "run"), [f"image {image['id']}: {path}: image file not found"]


@case("image-empty")
def _(base, folder):
    data_dir = _copy_synthetic(base, folder)
    _, image, path = _first_train_image(data_dir)
    open(path, "wb").close()
    return _train_argv(data_dir, folder / "run"), [f"image {image['id']}: {path}: empty file"]


@case("image-not-an-image")
def _(base, folder):
    data_dir = _copy_synthetic(base, folder)
    _, image, path = _first_train_image(data_dir)
    path.write_text("not an image")
    return _train_argv(data_dir, folder / "run"), [f"image {image['id']}: {path}: not a readable image"]


@case("image-truncated")
def _(base, folder):
    data_dir = _copy_synthetic(base, folder)
    _, image, path = _first_train_image(data_dir)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return (_train_argv(data_dir, folder / "run"),
            [str(data_dir / "instances_train.json"), f"image {image['id']}: {path}: truncated PNG"])


@case("image-size-mismatch")
def _(base, folder):
    data_dir = _copy_synthetic(base, folder)
    data, image, path = _first_train_image(data_dir)
    image["width"], image["height"] = image["height"], image["width"]
    write_json(str(data_dir / "instances_train.json"), data)
    return (_train_argv(data_dir, folder / "run"),
            [f"image {image['id']}: {path}: stored as 128x64 but the JSON says 64x128", "rotated?"])


@case("train-out-finished")
def _(base, folder):
    run = folder / "run"
    run.mkdir()
    (run / "DONE").write_text("epochs 1\n")
    return _train_argv(base / "syn", run), [f"{run}: holds a finished run; use --overwrite"]


@case("train-out-not-a-run")
def _(base, folder):
    run = folder / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine\n")
    return _train_argv(base / "syn", run), [f"{run}: already holds files; use --overwrite or another --out"]


@case("model-missing")
def _(base, folder):
    return _evaluate_argv(base, folder / "nope.keras", folder), [f"{folder / 'nope.keras'}: no such model file"]


@case("model-not-keras")
def _(base, folder):
    path = folder / "model.keras"
    path.write_text("not a model")
    return _evaluate_argv(base, path, folder), [f"{path}: not a .keras model file"]


@case("model-wrong-extension")
def _(base, folder):
    path = folder / "model.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n")
    return _evaluate_argv(base, path, folder), [f"{path}: not a .keras model file"]


@case("model-truncated")
def _(base, folder):
    path = _keras_file(folder / "full.keras", __import__("keras").layers.Dense(2))
    data = open(path, "rb").read()
    cut = folder / "cut.keras"
    cut.write_bytes(data[: len(data) // 2])
    return _evaluate_argv(base, cut, folder), [f"{cut}: not a .keras model file"]


@case("model-zip-not-keras")
def _(base, folder):
    path = folder / "z.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.txt", "x")
    return _evaluate_argv(base, path, folder), [f"{path}: cannot load model", "config.json"]


@case("model-lambda")
def _(base, folder):
    import keras

    path = _keras_file(folder / "lambda.keras", keras.layers.Lambda(lambda x: x * 2))
    return _evaluate_argv(base, path, folder), [f"{path}: refused by safe_mode", "Lambda"]


@case("model-foreign-code")
def _(base, folder):
    path = _zip_keras(folder / "os.keras", {"module": "os", "class_name": "system", "config": "touch pwned",
                                            "registered_name": None})
    return _evaluate_argv(base, path, folder), [f"{path}: cannot load model"]


@case("model-not-solo")
def _(base, folder):
    import keras

    path = _keras_file(folder / "dense.keras", keras.layers.Dense(2))
    return _evaluate_argv(base, path, folder), [f"{path}: holds a Sequential, not a keras_solo SOLO model"]


@case("tflite-not-tflite")
def _(base, folder):
    path = folder / "model.tflite"
    path.write_text("not a flatbuffer")
    return ["benchmark", str(path), "--runs", "1"], [f"{path}: not a TFLite flatbuffer"]


@case("tflite-garbled")
def _(base, folder):
    path = folder / "model.tflite"
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 4)
    return ["benchmark", str(path), "--runs", "1"], [f"{path}: cannot load TFLite model"]


@case("evaluate-out-has-results")
def _(base, folder):
    (folder / "eval").mkdir()
    (folder / "eval" / "metrics.json").write_text("{}")
    return (_evaluate_argv(base, folder / "any.keras", folder),
            [f"{folder / 'eval'}: already holds metrics.json; use --overwrite or another --out"])


@case("predict-out-has-files")
def _(base, folder):
    (folder / "pred").mkdir()
    (folder / "pred" / "x.jpg").write_bytes(b"")
    return (["predict", "--model", str(folder / "any.keras"), "--source", str(base / "syn" / "val"),
             "--out", str(folder / "pred")], [f"{folder / 'pred'}: already holds files; use --overwrite"])


@case("predict-out-is-input")
def _(base, folder):
    images = folder / "images"
    shutil.copytree(base / "syn" / "val", images)
    first = sorted(images.iterdir())[0]
    shutil.copy(first, images / "frame.jpg")  # frame.jpg's overlay would be frame.jpg itself
    return (["predict", "--model", str(folder / "any.keras"), "--source", str(images), "--out", str(images),
             "--overwrite"], [f"{images}: is the source folder; overlays written there would be read as inputs"])


@case("predict-video-out-is-input")
def _(base, folder):
    import cv2
    import numpy as np

    video = folder / "clip_pred.mp4"  # its overlay video in its own folder would be clip_pred_pred.mp4 ...
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 32))
    for _ in range(2):
        writer.write(np.zeros((32, 64, 3), np.uint8))
    writer.release()
    link = folder / "clip.mp4"  # ... and clip.mp4's is clip_pred.mp4 itself
    link.symlink_to(video)
    return (["predict", "--model", str(folder / "any.keras"), "--source", str(link), "--out", str(folder),
             "--overwrite"], [f"{folder}: writing here would replace the input {link}"])


@case("out-not-creatable")
def _(base, folder):
    return (["inspect-data", str(base / "syn" / "instances_val.json"), "--out", "/proc/keras-solo/sub"],
            ["/proc/keras-solo/sub: cannot write here (No such file or directory)"])


@case("train-out-in-use")
def _(base, folder):
    from keras_solo.train import RunLock

    out = folder / "run"
    HELD_LOCKS.append(RunLock(str(out)))  # held as a running training holds it, until the test process ends
    return (_train_argv(_copy_synthetic(base, folder), out),
            [f"{out}: in use by a training still running (process {os.getpid()}); wait for it to end"])


@case("predict-source-missing")
def _(base, folder):
    return (["predict", "--model", "m.keras", "--source", str(folder / "nope"), "--out", str(folder / "p")],
            [f"{folder / 'nope'}: no such file or folder"])


@case("video-unreadable")
def _(base, folder):
    path = folder / "clip.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    return (["predict", "--model", str(folder / "any.keras"), "--source", str(path), "--out", str(folder / "p")],
            [f"{path}: cannot open video"])


# ---------------------------------------------------------------------------


def _run(capsys, argv):
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line(name, base, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a "touch pwned" that ran would land here
    argv, needles = CASES[name](base, tmp_path)
    code, err = _run(capsys, argv)
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and err.count("error: ") == 1, err
    for needle in needles:
        assert needle in last, last
    assert not (tmp_path / "pwned").exists()


def test_debug_shows_the_traceback(base, tmp_path):
    argv, _ = CASES["config-unknown-key"](base, tmp_path)
    with pytest.raises(SoloError):
        main(["--debug", *argv])


def test_catalogue_lists_every_case():
    text = open(ERRORS_MD, encoding="utf-8").read()
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.M))
    assert listed >= set(CASES), f"add to docs/ERRORS.md: {sorted(set(CASES) - listed)}"


def test_non_strict_polygons_are_counted_not_fatal(tiny_coco):
    from keras_solo.data.coco import load_coco

    tiny_coco.data["annotations"][0]["segmentation"] = [[1, 1, 5, 5], [8, 8, 40, 8, 40, 30, 8, 30]]
    write_json(tiny_coco.json_path, tiny_coco.data)
    with pytest.warns(UserWarning, match=r"skipped 1 invalid polygon\(s\).*annotation 1: polygon with fewer"):
        dataset = load_coco(tiny_coco.json_path)
    assert dataset.stats["skipped_polygons"] == 1


def test_corrupt_image_while_evaluating_is_one_line(base, tmp_path):
    """Damage inside a complete PNG passes the up-front check and is found by
    the decoder inside tf.data; evaluate_model turns it into the one line."""
    from helpers import tiny_config

    from keras_solo import builders
    from keras_solo.data.coco import load_coco
    from keras_solo.evaluate import evaluate_model

    data_dir = _copy_synthetic(base, tmp_path)
    path = _damage_png(data_dir / "val" / sorted(os.listdir(data_dir / "val"))[0])
    model = builders.build_model(tiny_config(str(data_dir)))
    coco = load_coco(data_dir / "instances_val.json", class_names=model.class_names)
    with pytest.raises(SoloError) as info:
        evaluate_model(model, coco, progress=False)
    message = str(info.value)
    assert message.endswith(f"{path}: not a readable image (corrupt or truncated)") and "\n" not in message
    assert info.value.__context__ is None and info.value.__cause__ is None


def _damage_png(path):
    """Inverts 16 bytes of pixel data; the file keeps its size, header and IEND."""
    data = bytearray(open(path, "rb").read())
    start = data.find(b"IDAT") + 28
    data[start : start + 16] = bytes(b ^ 0xFF for b in data[start : start + 16])
    open(path, "wb").write(bytes(data))
    return path


def _console(args, timeout, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    code = ("import sys; from keras_solo.cli import main; sys.exit(main())")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


def _traceback_free(stderr):
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    return "Traceback" not in stderr and len(lines) == 1, lines


def test_console_script_refuses_lambda_model(base, tmp_path):
    argv, needles = CASES["model-lambda"](base, tmp_path)
    result = _console(argv, 120, tmp_path)
    ok, lines = _traceback_free(result.stderr)
    assert result.returncode == 2 and ok, result.stderr[-2000:]
    assert all(n in lines[0] for n in needles)
    # TensorFlow's start-up lines (printed whatever TF_CPP_MIN_LOG_LEVEL says) are held back
    from keras_solo.cli import STARTUP_NOISE

    assert not [line for line in result.stderr.splitlines() if any(n in line for n in STARTUP_NOISE)], result.stderr


def _train_converts_pipeline_errors():
    return "call_with_data_errors" in open(os.path.join(ROOT, "keras_solo", "train.py"), encoding="utf-8").read()


@pytest.mark.skipif(not _train_converts_pipeline_errors(),
                    reason="needs train.py to wrap model.fit in call_with_data_errors (docs/ERRORS.md)")
def test_corrupt_image_during_fit_is_one_line_and_exits(base, tmp_path):
    """The damaged PNG passes the up-front check, fails in the tf.data map
    inside model.fit: one line, exit 2, and the process exits (it used to
    print a TF traceback and sometimes hang at interpreter shutdown)."""
    data_dir = _copy_synthetic(base, tmp_path)
    _, image, path = _first_train_image(data_dir)
    _damage_png(path)
    argv = _train_argv(data_dir, tmp_path / "run", "train.steps_per_epoch=3", "train.epochs=2")
    result = _console(argv, 240, tmp_path)  # a hang shows as TimeoutExpired
    ok, lines = _traceback_free(result.stderr)
    assert result.returncode == 2 and ok, result.stderr[-3000:]
    assert lines[0] == (f"error: {data_dir / 'instances_train.json'}: image {image['id']}: {path}: "
                        "not a readable image (corrupt or truncated)")


if __name__ == "__main__":  # prints the catalogue's messages (paths shortened) for docs/ERRORS.md
    import tempfile
    from pathlib import Path

    from keras_solo.data.synthetic import make_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        base_dir = Path(tmp) / "base"
        make_synthetic(str(base_dir / "syn"), images=6, size=(128, 64), seed=0)
        write_tiny_coco(base_dir / "tiny")
        for case_name, prepare in CASES.items():
            folder = Path(tmp) / case_name
            folder.mkdir()
            os.chdir(folder)
            argv_, _ = prepare(base_dir, folder)
            import contextlib
            import io

            stream = io.StringIO()
            with contextlib.redirect_stderr(stream):
                main(argv_)
            line = stream.getvalue().strip().splitlines()[-1]
            print(f"{case_name}\t{argv_[0]}\t{line.replace(str(folder), 'F').replace(str(base_dir), 'B')}")


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "inspect-data", "make-synthetic", "export"])
def test_out_naming_a_file_is_one_line_before_any_work(command, base, tmp_path, capsys):
    """--out naming an existing file: one line, nothing run (it used to be a FileExistsError traceback)."""
    target = tmp_path / "taken"
    target.write_text("mine")
    model = str(tmp_path / "any.keras")
    argv = {
        "train": _train_argv(base / "syn", target),
        "evaluate": ["evaluate", "--model", model, "--data", str(base / "syn" / "instances_val.json"),
                     "--out", str(target)],
        "predict": ["predict", "--model", model, "--source", str(base / "syn" / "val"), "--out", str(target)],
        "inspect-data": ["inspect-data", str(base / "syn" / "instances_val.json"), "--out", str(target)],
        "make-synthetic": ["make-synthetic", "--out", str(target), "--images", "2"],
        "export": ["export", "--model", model, "--format", "saved_model", "--out", str(target)],
    }[command]
    code, err = _run(capsys, argv)
    assert code == 2 and "Traceback" not in err
    assert err.strip() == f"error: {target}: exists and is not a folder; --out must name a folder"
    assert target.read_text() == "mine"


def test_out_under_a_read_only_folder_is_one_line(base, tmp_path, capsys, monkeypatch):
    """Read-only parents (simulated: the tests run as root, which may write anywhere)."""
    import os as _os

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = _os.access
    monkeypatch.setattr(_os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    out = locked / "eval"
    code, err = _run(capsys, ["evaluate", "--model", str(tmp_path / "any.keras"),
                              "--data", str(base / "syn" / "instances_val.json"), "--out", str(out)])
    assert code == 2 and err.strip() == f"error: {out}: cannot write here ({locked} is not writable)"
    code, err = _run(capsys, ["make-synthetic", "--out", str(locked / "syn"), "--images", "2"])
    assert code == 2 and "is not writable" in err and not (locked / "syn").exists()
