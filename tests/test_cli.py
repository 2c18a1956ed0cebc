"""The keras-solo command: help texts and one-line errors."""

import subprocess
import sys

import pytest

from keras_solo.cli import build_parser, main

COMMANDS = ("make-synthetic", "convert-cityscapes", "convert-yolo", "inspect-data", "config", "train",
            "evaluate", "predict", "ablation", "export", "profile", "benchmark")


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
