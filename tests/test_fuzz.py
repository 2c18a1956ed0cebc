"""Property-based fuzzing of the loaders that read user files (hypothesis).

Property: whatever the document, `load_coco` (COCO JSON) and the config
loader (`config_from_dict`, `load_config` with YAML files and ``--set``
strings) either return a result or raise `SoloError` with a one-line
message; no other exception escapes. What `load_coco` accepts must also
rasterise (`ann_to_mask`) without an exception, and the up-front image check
(`check_image_files`) of an accepted file raises nothing but SoloError.

Documents are random JSON / YAML values, and valid documents (the tiny COCO
file of tests/helpers.py, keras_solo/presets/demo.yaml) mutated at random paths
(replaced, deleted, wrapped, extreme numbers) or cut / spliced as text.

500 examples per property in CI (derandomized, so CI is repeatable); the
`slow` tests run 10,000 with fresh randomness (numbers in docs/ERRORS.md).
"""

import copy
import json
import math
import os
import tempfile
import warnings

import pytest
import yaml
from helpers import write_tiny_coco
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_solo.config import config_from_dict, config_to_dict, load_config
from keras_solo.data.coco import ann_to_mask, check_image_files, load_coco
from keras_solo.errors import SoloError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "keras_solo", "presets", "demo.yaml")  # the whole preset, not a recipe naming it
CI = settings(max_examples=500, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(max_examples=10_000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WORK = tempfile.mkdtemp(prefix="keras_solo_fuzz_")
TINY = write_tiny_coco(os.path.join(WORK, "tiny"))
DEMO_DICT = yaml.safe_load(open(DEMO, encoding="utf-8"))
DEFAULT_DICT = config_to_dict(config_from_dict({}))

# ---------------------------------------------------------------------------
# Strategies

EXTREMES = st.sampled_from([
    None, True, False, 0, -1, 1, 3, 2**31, 2**63, 10**400, -(10**400), 0.5, -0.0, 1e308, float("nan"),
    float("inf"), -float("inf"), "", "1e-4", "../../x.png", "/etc/passwd", "a\u0000b", "C:\\x.png", "~", "P3",
    "gaussian", [], {}, [0, 0], [1, 2, 3, 4], [[1, 1, 5, 5]], {"size": [1, 1], "counts": "0"},
]).map(copy.deepcopy)  # fresh containers: a mutation must not change the strategy's own values
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | EXTREMES
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)


def _paths(node, prefix=()):
    """Every (container path, key) in a JSON-like tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield prefix, key
        yield from _paths(child, (*prefix, key))


def _at(node, path):
    for key in path:
        node = node[key]
    return node


@st.composite
def mutated(draw, document, keys=st.text(max_size=10)):
    """`document` with 1-4 random mutations at random places."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(doc))
        if not paths or not isinstance(doc, (dict, list)):
            break
        path, key = draw(st.sampled_from(paths))
        parent = _at(doc, path)
        op = draw(st.sampled_from(["extreme", "extreme", "replace", "delete", "wrap", "add", "duplicate"]))
        if op == "extreme":
            parent[key] = draw(EXTREMES)
        elif op == "replace":
            parent[key] = draw(VALUES)
        elif op == "delete":
            del parent[key]
        elif op == "wrap":
            parent[key] = [parent[key]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(keys)] = draw(VALUES)
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return doc


@st.composite
def spliced_text(draw, text):
    """`text` cut short, or with a random piece inserted / removed."""
    op = draw(st.sampled_from(["cut", "insert", "remove"]))
    i = draw(st.integers(0, len(text)))
    if op == "cut":
        return text[:i]
    if op == "insert":
        return text[:i] + draw(st.text(max_size=8)) + text[i:]
    j = draw(st.integers(i, min(len(text), i + 20)))
    return text[:i] + text[j:]


COCO_DOCS = st.one_of(VALUES, mutated(TINY.data), mutated(TINY.data, keys=st.sampled_from(
    ["id", "image_id", "category_id", "segmentation", "bbox", "iscrowd", "area", "file_name", "width",
     "height", "name", "counts", "size"])))
COCO_TEXT = spliced_text(json.dumps(TINY.data))
CONFIG_KEYS = st.sampled_from(sorted({k for section in DEFAULT_DICT.values() for k in section} | set(DEFAULT_DICT)))
CONFIG_DOCS = st.one_of(VALUES, mutated(DEFAULT_DICT), mutated(DEMO_DICT, keys=CONFIG_KEYS))
CONFIG_TEXT = spliced_text(open(DEMO, encoding="utf-8").read())
OVERRIDES = st.lists(
    st.one_of(st.text(max_size=30),
              st.builds(lambda k, v: f"{k}={v}",
                        st.sampled_from(["train.epochs", "model.grids", "eval.score_thr", "model", "data.flip",
                                         "train.learning_rate", "model.scale_ranges", "x.y", "train..epochs"]),
                        st.text(max_size=12) | st.sampled_from(["1e-4", ".nan", "[1, 2", "{a: 1}", "~", "!!set {a}"]))),
    max_size=3)


# ---------------------------------------------------------------------------
# Properties


def _one_line_solo_error(error):
    assert isinstance(error, SoloError), f"{type(error).__name__}: {error}"
    message = str(error)
    assert message and "\n" not in message and "\r" not in message


def _coco_property(document=None, text=None):
    path = os.path.join(TINY.image_root, "fuzz.json")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text if text is not None else json.dumps(document))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = load_coco(path)
    except Exception as error:  # noqa: BLE001 - the property under test
        _one_line_solo_error(error)
        return
    try:
        check_image_files(dataset)  # reads the files the records name
    except Exception as error:  # noqa: BLE001
        _one_line_solo_error(error)
    for record in dataset.records:  # what was accepted must rasterise
        if record.width * record.height > 1_000_000:
            continue
        for ann in record.annotations:
            mask = ann_to_mask(ann.segmentation, record.height, record.width)
            assert mask.shape == (record.height, record.width)


def _config_property(document):
    try:
        config = config_from_dict(document, "fuzz.yaml")
    except Exception as error:  # noqa: BLE001
        _one_line_solo_error(error)
        return
    for section in config_to_dict(config).values():  # accepted numbers are finite
        for value in section.values():
            if isinstance(value, float):
                assert math.isfinite(value)


def _config_text_property(text, overrides):
    path = os.path.join(WORK, "fuzz.yaml")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)
    try:
        load_config(path, overrides)
    except Exception as error:  # noqa: BLE001
        _one_line_solo_error(error)


@CI
@given(COCO_DOCS)
def test_coco_documents(document):
    _coco_property(document=document)


@CI
@given(COCO_TEXT)
def test_coco_text(text):
    _coco_property(text=text)


@CI
@given(CONFIG_DOCS)
def test_config_documents(document):
    _config_property(document)


@CI
@given(CONFIG_TEXT, OVERRIDES)
def test_config_yaml_and_overrides(text, overrides):
    _config_text_property(text, overrides)


@pytest.mark.slow
@SLOW
@given(COCO_DOCS)
def test_coco_documents_10k(document):
    _coco_property(document=document)


@pytest.mark.slow
@SLOW
@given(COCO_TEXT)
def test_coco_text_10k(text):
    _coco_property(text=text)


@pytest.mark.slow
@SLOW
@given(CONFIG_DOCS)
def test_config_documents_10k(document):
    _config_property(document)


@pytest.mark.slow
@SLOW
@given(CONFIG_TEXT, OVERRIDES)
def test_config_yaml_and_overrides_10k(text, overrides):
    _config_text_property(text, overrides)


# Known answers for what the fuzzer found (each was an escaping exception).


@pytest.mark.parametrize("change, needle", [
    (lambda d: d["annotations"][0].update(area=10**400), "'area' is out of range"),
    (lambda d: d["annotations"][0].update(id=10**400), None),  # a big integer id is an integer
    (lambda d: d["images"][0].update(file_name="a\u0000b.png"), "contains a NUL character"),
    (lambda d: d["images"][0].update(width=10**400), "'width' must be <= 1048576"),
])
def test_fuzz_findings_coco(change, needle, tiny_coco):
    change(tiny_coco.data)
    with open(tiny_coco.json_path, "w", encoding="utf-8") as stream:
        stream.write(json.dumps(tiny_coco.data))
    if needle is None:
        load_coco(tiny_coco.json_path)
        return
    with pytest.raises(SoloError, match=needle):
        load_coco(tiny_coco.json_path)


@pytest.mark.parametrize("data, needle", [
    ({"train": {"learning_rate": 10**400}}, "train.learning_rate: expected a finite number"),
    ({"train": {"weight_decay": float("inf")}}, "train.weight_decay: expected a finite number, got inf"),
    ({"model": {"attention_gamma_init": float("nan")}}, "model.attention_gamma_init: expected a finite number"),
])
def test_fuzz_findings_config(data, needle):
    with pytest.raises(SoloError, match=needle):
        config_from_dict(data)


def test_fuzz_finding_deep_nesting(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SoloError, match="nested too deeply"):
        load_coco(deep)
    deep_yaml = tmp_path / "deep.yaml"
    deep_yaml.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SoloError, match="nested too deeply"):
        load_config(str(deep_yaml))


def test_yaml_exponent_without_dot_is_a_number():
    # YAML 1.1 (PyYAML) reads 1e-4 as a string; the config accepts it as the number users mean.
    assert load_config(None, ["train.learning_rate=1e-4"]).train.learning_rate == 1e-4
    assert load_config(None, ["train.weight_decay=5E-5"]).train.weight_decay == 5e-5
