"""`keras-solo ablation` bookkeeping: variants, reuse of finished runs, tables.

Training and evaluation are replaced by fakes that record what was run; the
models themselves are covered by test_solo.py and test_end_to_end.py.
"""

import json
import os

import pytest
from helpers import tiny_config

from keras_solo import ablation
from keras_solo.data.synthetic import make_synthetic
from keras_solo.errors import SoloError

pytestmark = pytest.mark.xdist_group("test_ablation")  # one pytest-xdist worker builds the module fixtures once

FAKE_AP = {(False, False): 1.0, (True, False): 2.0, (True, True): 3.0}


@pytest.fixture
def fakes(monkeypatch):
    """Fake train / load_model / evaluate_model; returns the list of trained run dirs."""
    import keras_solo.evaluate
    import keras_solo.model.solo
    import keras_solo.train

    trained = []

    def train(config, run_dir, **kwargs):
        trained.append(os.path.relpath(run_dir))
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "DONE"), "w") as f:
            f.write("done\n")
        with open(os.path.join(run_dir, "best.keras"), "w") as f:
            json.dump([config.model.use_coords, config.model.use_attention, config.train.seed], f)

    def load_model(path):
        with open(path) as f:
            return json.load(f)

    def evaluate_model(model, val, **kwargs):
        coords, attention, seed = model
        ap = FAKE_AP[(coords, attention)] + 0.1 * seed
        return {"segm": {m: ap for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")}}, []

    monkeypatch.setattr(keras_solo.train, "train", train)
    monkeypatch.setattr(keras_solo.model.solo, "load_model", load_model)
    monkeypatch.setattr(keras_solo.evaluate, "evaluate_model", evaluate_model)
    return trained


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    data = tmp_path_factory.mktemp("synthetic")
    make_synthetic(str(data), images=6, size=(128, 64), seed=0, val_fraction=0.5)
    return tiny_config(str(data))


def test_all_variants_then_rerun_one(fakes, config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results, tables = ablation.run_ablation(config, "out", seeds=2)
    assert sorted(fakes) == sorted(f"out/{key}/seed{seed}" for key in ablation.VARIANT_KEYS for seed in (0, 1))
    assert [r["AP"] for r in results["attention"]] == pytest.approx([config.train.seed * 0.1 + 3.0,
                                                                     config.train.seed * 0.1 + 3.1])
    assert "| Attention mechanism | 3." in tables

    fakes.clear()  # a later run with more seeds trains only the new ones and extends the tables
    results, tables = ablation.run_ablation(config, "out", seeds=3)
    assert sorted(fakes) == sorted(f"out/{key}/seed2" for key in ablation.VARIANT_KEYS)
    assert [r["seed"] for r in results["solo"]] == [0, 1, 2]
    assert "| Attention mechanism | 3 | 3.10 ± 0.10" in tables

    fakes.clear()
    results, tables = ablation.run_ablation(config, "out", seeds=2, overwrite=True, variants=["attention"])
    assert sorted(fakes) == ["out/attention/seed0", "out/attention/seed1"]  # only the listed variant
    assert set(results) == set(ablation.VARIANT_KEYS)  # the others' results are reused
    assert json.load(open("out/ablation.json"))["results"]["solo"] == results["solo"]
    assert "| SOLO (no coords) | 1." in open("out/ablation.md").read()


def test_one_variant_into_a_new_folder_leaves_the_others_out(fakes, config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results, tables = ablation.run_ablation(config, "single", variants=["solo"])
    assert fakes == ["single/solo/seed0"] and set(results) == {"solo"}
    assert "| Attention mechanism | n/a" in tables


def test_unknown_variant_is_one_line(config, tmp_path):
    with pytest.raises(SoloError, match="--variants coords: choose from no_coords, solo, attention"):
        ablation.run_ablation(config, str(tmp_path / "x"), variants=["coords"])


def test_cli_unknown_variant_is_one_line(config, tmp_path):
    import subprocess
    import sys

    from keras_solo.config import save_config

    path = str(tmp_path / "preset.yaml")
    save_config(config, path)
    proc = subprocess.run([sys.executable, "-m", "keras_solo.cli", "ablation", "--config", path,
                           "--variants", "solo,coords", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert errors == ["error: --variants coords: choose from no_coords, solo, attention"]
    assert not os.path.exists(tmp_path / "x")  # nothing written
