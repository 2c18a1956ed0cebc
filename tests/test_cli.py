"""The keras-solo command: help texts and one-line errors."""

import subprocess
import sys

import pytest

from keras_solo.cli import build_parser, main

COMMANDS = ("make-synthetic", "convert-cityscapes", "convert-yolo", "inspect-data", "config", "train",
            "evaluate", "predict", "track", "ablation", "export", "profile", "benchmark")


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in COMMANDS:
        assert name in text


@pytest.mark.parametrize("name", COMMANDS)
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert "usage: keras-solo " + name in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "keras_solo.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "make-synthetic" in out.stdout


def test_bad_config_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lerning_rate: 0.1\n")
    assert main(["config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err == f"error: {bad}: train.lerning_rate: unknown key (did you mean learning_rate?)"


def test_debug_shows_traceback(tmp_path):
    from keras_solo.errors import SoloError

    with pytest.raises(SoloError):
        main(["--debug", "config", "--config", str(tmp_path / "missing.yaml")])


def test_config_prints_resolved(capsys):
    assert main(["config", "--set", "train.epochs=7"]) == 0
    assert "epochs: 7" in capsys.readouterr().out


def test_parser_builds():
    assert build_parser().prog == "keras-solo"


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"keras-solo {version('keras-solo')}"


def _missing_help(parser):
    import argparse

    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += [f"{name} {m}" for m in _missing_help(sub)]
        elif action.help is None and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


def test_every_option_has_help_text():
    from keras_solo.runtime.cli import build_parser as runtime_parser

    assert _missing_help(build_parser()) == []
    assert _missing_help(runtime_parser()) == []


@pytest.mark.parametrize("argv", [
    ["train", "--config", "demo", "--out", "/proc/keras-solo/run"],
    ["export", "--model", "m.keras", "--format", "tflite", "--out", "/proc/keras-solo/m.tflite"],
])
def test_train_and_export_check_out_before_tensorflow_loads(argv):
    """They checked --out only after TensorFlow had loaded (7-8 s); the other commands in 0.3 s."""
    code = ("import sys; from keras_solo.cli import main; "
            f"code = main({argv!r}); print(code, 'tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split() == ["2", "False"], proc.stderr
    assert "/proc/keras-solo" in proc.stderr and "cannot write here" in proc.stderr


def test_a_batch_larger_than_the_training_set_warns(synthetic, tmp_path, capsys):
    """One step of repeated images trained without a word."""
    from helpers import tiny_config

    from keras_solo import train_run

    train_run(tiny_config(str(synthetic), "train.epochs=1", "data.val_json="), tmp_path / "run",
              overrides=["train.batch_size=16", "train.steps_per_epoch=1"], verbose=0)
    assert "training image(s) for train.batch_size 16: every batch repeats images" in capsys.readouterr().err
    assert (tmp_path / "run" / "DONE").exists() and (tmp_path / "run" / "best.keras").exists()


def test_evaluate_is_the_public_coco_metrics(tmp_path, monkeypatch, capsys):
    """`keras-solo evaluate` is a thin layer over `keras_solo.coco_metrics`: it passes the command
    line through and writes what the function returns (a spy stands in for the model run)."""
    from keras_solo import api

    calls = []
    metrics = {"segm": {"AP": 12.5}, "bbox": {"AP": 20.0}, "per_class": {"car": 12.5},
               "ms_per_image": {"preprocess": 1.0, "network": 2.0, "decode": 3.0}}

    def coco_metrics(model, json_path, images=None, **kwargs):
        calls.append((model, json_path, images, kwargs))
        return dict(metrics), [{"image_id": 1, "score": 0.9}]

    monkeypatch.setattr(api, "coco_metrics", coco_metrics)
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", "m.keras", "--data", "val.json", "--images", "img", "--limit", "3",
                 "--set", "eval.score_thr=0.2", "--out", str(out)]) == 0
    assert calls == [("m.keras", "val.json", "img", {"limit": 3, "progress": True,
                                                    "overrides": ["eval.score_thr=0.2"], "return_detections": True})]
    import json

    assert json.loads((out / "metrics.json").read_text())["segm"] == {"AP": 12.5}
    assert json.loads((out / "detections.json").read_text()) == [{"image_id": 1, "score": 0.9}]
    assert "12.5" in capsys.readouterr().out


def test_train_predict_track_are_the_public_functions(tmp_path, monkeypatch, capsys):
    """`keras-solo train` calls `keras_solo.train_run` with the resolved config; `predict` and `track`
    open their model with `keras_solo.load_engine` (spies stand in for training and the model)."""
    from keras_solo import api
    from keras_solo.errors import SoloError

    calls = []
    monkeypatch.setattr(api, "train_run", lambda config, out, **kwargs: calls.append((config, out, kwargs)))
    out = str(tmp_path / "run")
    assert main(["train", "--config", "demo", "--set", "train.epochs=2", "--out", out]) == 0
    (config, path, kwargs), = calls
    assert config.train.epochs == 2 and config.model.backbone == "tiny" and path == out
    assert kwargs == {"overwrite": False}

    def load_engine(model, **kwargs):
        calls.append((model, kwargs))
        raise SoloError(f"{model}: the spy")

    monkeypatch.setattr(api, "load_engine", load_engine)
    image = tmp_path / "a.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    for command in ("predict", "track"):
        calls.clear()
        assert main([command, "--model", "m.keras", "--source", str(image), "--threads", "1",
                     "--out", str(tmp_path / command)]) == 2
        assert calls == [("m.keras", {"threads": 1})], command
        assert "m.keras: the spy" in capsys.readouterr().err


def test_export_is_the_public_export_model(tmp_path, monkeypatch, capsys):
    """`keras-solo export` resolves its arguments (run config, --top-k, --calib-data) and calls
    `keras_solo.export_model` with them (a spy stands in for the conversion)."""
    from keras_solo import api

    model = object()  # what load_model gave: passed on as it is (no --imgsz, no --set)
    monkeypatch.setattr("keras_solo.model.solo.load_model", lambda path: model)
    calls = []

    def export_model(m, path, **kwargs):
        calls.append((m, path, kwargs))
        return {"size_bytes": 2**20, "input_size": [64, 64], "format": kwargs["format"], "quant": kwargs["quant"],
                "num_candidates": 3, "max_detections": 3, "gflops": 0.5}

    monkeypatch.setattr(api, "export_model", export_model)
    (tmp_path / "m.keras").write_bytes(b"")
    out = tmp_path / "m.tflite"
    assert main(["export", "--model", str(tmp_path / "m.keras"), "--format", "tflite", "--quant", "int8",
                 "--calib-data", "train.json", "--calib-root", "img", "--top-k", "7", "--out", str(out)]) == 0
    (m, path, kwargs), = calls
    assert m is model and path == str(out)
    assert {k: kwargs[k] for k in ("format", "quant", "top_k", "calibration", "images", "source")} == {
        "format": "tflite", "quant": "int8", "top_k": 7, "calibration": "train.json", "images": "img",
        "source": str(tmp_path / "m.keras")}
    assert "wrote " + str(out) in capsys.readouterr().out


def test_own_warnings_print_as_one_line(monkeypatch):
    """A keras-solo warning prints as `warning: ...` without Python's source line; others keep theirs."""
    import warnings

    from keras_solo import builders, cli

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    cli.one_line_warnings()
    ours = warnings.formatwarning("a.json: 2 image(s) ...", UserWarning, builders.__file__, 81, "return _build(")
    assert ours == "warning: a.json: 2 image(s) ...\n"
    theirs = warnings.formatwarning("x", UserWarning, "/elsewhere/k.py", 3, "line()")
    assert "k.py:3: UserWarning: x" in theirs and "line()" in theirs
