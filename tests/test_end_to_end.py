"""The main job through the CLI on a tiny synthetic set: train -> evaluate -> predict."""

import json
import os

import pytest

from helpers import TINY_MODEL_OVERRIDES
from keras_solo.cli import main
from keras_solo.data.synthetic import make_synthetic

pytestmark = pytest.mark.xdist_group("test_end_to_end")  # one pytest-xdist worker builds the module fixtures once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    data = base / "data"
    make_synthetic(str(data), images=6, size=(128, 64), seed=5, val_fraction=0.34, empty_fraction=0.0)
    sets = [f"--set={o}" for o in TINY_MODEL_OVERRIDES] + [
        f"--set=data.train_json={data / 'instances_train.json'}",
        f"--set=data.val_json={data / 'instances_val.json'}",
        "--set=train.epochs=2", "--set=train.steps_per_epoch=2", "--set=train.batch_size=2",
        "--set=train.eval_every=1"]
    out = base / "run"
    code = main(["train", "--config", os.path.join(ROOT, "training", "demo.yaml"), "--out", str(out), *sets])
    assert code == 0
    return {"data": data, "out": out, "sets": sets}


def test_train_writes_run_folder(run):
    out = run["out"]
    for name in ("best.keras", "last.keras", "config.yaml", "log.csv", "loss_curve.png", "DONE"):
        assert (out / name).exists(), name
    header = (out / "log.csv").read_text().splitlines()[0]
    assert "val_AP" in header and "cate_loss" in header  # AP callback logged to the CSV
    assert len((out / "log.csv").read_text().splitlines()) == 3  # header + 2 epochs


def test_finished_run_is_not_overwritten(run, capsys):
    code = main(["train", "--config", os.path.join(ROOT, "training", "demo.yaml"), "--out", str(run["out"]),
                 *run["sets"]])
    assert code == 2
    assert "holds a finished run" in capsys.readouterr().err


def test_evaluate_and_predict(run, tmp_path, capsys):
    model = str(run["out"] / "best.keras")
    data = run["data"]
    assert main(["evaluate", "--model", model, "--data", str(data / "instances_val.json"),
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["segm"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert metrics["num_images"] == 2
    detections = json.loads((tmp_path / "eval" / "detections.json").read_text())
    assert all("counts" in d["segmentation"] for d in detections)
    # a second evaluate into the same folder is refused without --overwrite
    assert main(["evaluate", "--model", model, "--data", str(data / "instances_val.json"),
                 "--out", str(tmp_path / "eval")]) == 2
    assert main(["predict", "--model", model, "--source", str(data / "val"), "--out", str(tmp_path / "pred"),
                 "--score", "0.0"]) == 0
    written = sorted(os.listdir(tmp_path / "pred"))
    assert "detections.json" in written and sum(n.endswith(".jpg") for n in written) == 2
    # without --out: a fresh runs/predict/N each time, never an earlier one (like ultralytics)
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        for n in (1, 2):
            assert main(["predict", "--model", model, "--source", str(data / "val"), "--limit", "1"]) == 0
            assert (tmp_path / "runs" / "predict" / str(n) / "detections.json").exists()
    finally:
        os.chdir(here)
