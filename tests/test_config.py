"""Strict config loading: presets, overrides, one-line errors."""

import dataclasses
import glob
import os

import pytest

from keras_solo.config import SOLOConfig, config_to_dict, load_config, replace, save_config
from keras_solo.errors import SoloError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = sorted(glob.glob(os.path.join(ROOT, "training", "*.yaml")))


def test_presets_exist():
    names = {os.path.basename(p) for p in PRESETS}
    for required in ("solo_r50_attention.yaml", "solo_r50.yaml", "solo_r50_nocoords.yaml",
                     "demo.yaml", "edge.yaml"):
        assert required in names


@pytest.mark.parametrize("path", PRESETS, ids=os.path.basename)
def test_every_preset_loads(path):
    config = load_config(path)
    assert isinstance(config, SOLOConfig)
    assert len(config.model.grids) == len(config.model.levels)


def test_paper_preset_matches_paper():
    m = load_config(os.path.join(ROOT, "training", "solo_r50_attention.yaml")).model
    assert m.backbone == "resnet50"
    assert m.input_size == (1344, 672)
    assert m.grids == (40, 36, 24, 16, 12)
    assert m.class_names == ("person", "rider", "car", "truck", "bus")
    assert m.use_attention and m.use_coords and m.head_convs == 7 and m.fpn_channels == 256


def test_ablation_variants_differ_only_in_switches():
    d = {n: config_to_dict(load_config(os.path.join(ROOT, "training", n)))
         for n in ("solo_r50_attention.yaml", "solo_r50.yaml", "solo_r50_nocoords.yaml")}
    a, s, n = (d[k]["model"] for k in ("solo_r50_attention.yaml", "solo_r50.yaml", "solo_r50_nocoords.yaml"))
    assert (a["use_coords"], a["use_attention"]) == (True, True)
    assert (s["use_coords"], s["use_attention"]) == (True, False)
    assert (n["use_coords"], n["use_attention"]) == (False, False)
    strip = lambda m: {k: v for k, v in m.items() if k not in ("use_coords", "use_attention")}
    assert strip(a) == strip(s) == strip(n)


def test_overrides_apply_and_parse_yaml_values():
    c = load_config(None, ["train.epochs=3", "model.grids=[4,3,2,2,2]", "eval.nms_kernel=linear"])
    assert c.train.epochs == 3 and c.model.grids == (4, 3, 2, 2, 2) and c.eval.nms_kernel == "linear"


def _error(tmp_path, text, overrides=()):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SoloError) as info:
        load_config(str(path), overrides)
    message = str(info.value)
    assert "\n" not in message and "bad.yaml" in message
    return message


def test_unknown_key_suggests(tmp_path):
    msg = _error(tmp_path, "train:\n  lerning_rate: 0.1\n")
    assert "train.lerning_rate: unknown key (did you mean learning_rate?)" in msg


def test_unknown_section(tmp_path):
    assert "trian: unknown key (did you mean train?)" in _error(tmp_path, "trian:\n  epochs: 1\n")


def test_wrong_type(tmp_path):
    assert "train.epochs: expected an integer" in _error(tmp_path, "train:\n  epochs: many\n")
    assert "model.use_coords: expected true/false" in _error(tmp_path, "model:\n  use_coords: 3\n")
    assert "model.grids" in _error(tmp_path, "model:\n  grids: 40\n")


def test_out_of_range(tmp_path):
    assert "eval.score_thr" in _error(tmp_path, "eval:\n  score_thr: 1.5\n")
    assert "train.learning_rate: must be > 0" in _error(tmp_path, "train:\n  learning_rate: -1\n")


def test_cross_field_rule(tmp_path):
    assert "model.grids: has 2 entries but model.levels has 5" in _error(tmp_path, "model:\n  grids: [4, 3]\n")


def test_bad_override_is_named(tmp_path):
    assert "train.epohcs" in _error(tmp_path, "train:\n  epochs: 2\n", ["train.epohcs=3"])
    assert "empty config (no keys)" in _error(tmp_path, "# nothing\n", ["train.epochs=3"])


def test_not_yaml_and_missing(tmp_path):
    assert "not valid YAML" in _error(tmp_path, "model: [unclosed\n")
    with pytest.raises(SoloError, match="no such config file"):
        load_config(str(tmp_path / "missing.yaml"))


def test_save_round_trip(tmp_path):
    c = load_config(os.path.join(ROOT, "training", "demo.yaml"), ["train.epochs=2"])
    save_config(c, tmp_path / "c.yaml")
    assert load_config(str(tmp_path / "c.yaml")) == c
    assert replace(c, **{"train.epochs": 5}).train.epochs == 5


def test_yaml_is_never_executed(tmp_path):
    msg = _error(tmp_path, "model: !!python/object/apply:os.system ['echo hacked']\n")
    assert "not valid YAML" in msg


def test_attention_normalize_choices():
    assert load_config(None).model.attention_normalize == "vector"
    assert load_config(None, ["model.attention_normalize=none"]).model.attention_normalize == "none"
    with pytest.raises(SoloError, match="model.attention_normalize: must be none, vector or image, got 'layer'"):
        load_config(None, ["model.attention_normalize=layer"])
    with pytest.raises(SoloError, match="model.attention_normalize: expected a string, got True"):
        load_config(None, ["model.attention_normalize=true"])


def test_backbone_freezing_is_off_by_default_and_auto_follows_the_weights():
    from keras_solo.builders import training_freeze

    assert training_freeze(load_config(None)) == ("none", False)
    assert training_freeze(load_config(os.path.join(ROOT, "training", "edge.yaml"))) == ("none", False)
    assert training_freeze(load_config(None, ["train.freeze_backbone=auto", "model.backbone_weights=imagenet"])) \
        == ("C2", False)
    auto = ["train.freeze_backbone=auto", "train.backbone_norm=auto"]
    assert training_freeze(load_config(None, auto + ["model.backbone_weights=imagenet"])) == ("C2", True)
    assert training_freeze(load_config(None, auto + ["model.backbone_weights=none"])) == ("none", False)
    assert training_freeze(load_config(None, ["train.freeze_backbone=C3"])) == ("C3", False)


def test_a_preset_names_its_base_and_only_what_it_changes(tmp_path):
    product = load_config(os.path.join(ROOT, "training", "edge_cityscapes5.yaml"))
    edge = load_config(os.path.join(ROOT, "training", "edge.yaml"))
    assert product.export == dataclasses.replace(edge.export, top_k=100, nms_pool=2) and edge.export.top_k == 50
    assert product.eval == edge.eval and product.eval.nms_pool == 1
    assert product.model.grids == (40, 14, 10, 8) and edge.model.grids == (20, 14, 10, 8)
    assert dataclasses.replace(product.model, grids=edge.model.grids) == edge.model  # only the grid
    assert product.data.train_json.endswith("instances_train_all.json")
    assert product.data.train_images == edge.data.train_images  # a section merges key by key
    assert product.train.epochs == 15 and product.train.ema_momentum > 0
    assert product.data.copy_paste == 0.5 and edge.data.copy_paste == 0.0
    assert product.train.learning_rate == edge.train.learning_rate
    (tmp_path / "a.yaml").write_text("base: b.yaml\ntrain:\n  epochs: 2\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(SoloError, match="b.yaml: base: a.yaml is a cycle of presets"):
        load_config(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("base: nope.yaml\n")
    with pytest.raises(SoloError, match="nope.yaml: no such config file"):
        load_config(str(tmp_path / "c.yaml"))


def test_only_empty_sections_is_an_empty_config(tmp_path):
    for text in ("model:\n", "model: {}\n", "model:\ntrain:\n"):
        assert "empty config (only empty sections" in _error(tmp_path, text)


def test_a_retired_key_loads_and_warns_only_off_its_old_default():
    """eval.batch_size (never read) is gone: run folders' config.yaml files that hold it still load."""
    import warnings

    from keras_solo.config import config_from_dict

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config_from_dict({"eval": {"batch_size": 1, "score_thr": 0.2}})
    with pytest.warns(UserWarning, match="eval.batch_size: no longer used"):
        config = config_from_dict({"eval": {"batch_size": 8}})
    assert not hasattr(config.eval, "batch_size")
