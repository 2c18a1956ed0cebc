"""The one-way data flow of docs/DESIGN.md, held in place with `ast`.

runtime -> config -> data -> model parts -> targets/losses/postprocess -> SOLO model
-> train/engine/evaluate -> ablation/export -> api -> cli. A module may import
modules of its own rank or lower, never higher (lazy imports included).
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "keras_solo")

RANKS = [
    ("keras_solo.errors",),
    ("keras_solo.runtime",),
    ("keras_solo.config",),
    ("keras_solo.data",),
    ("keras_solo.model.layers", "keras_solo.model.pth", "keras_solo.model.batch_norm"),
    ("keras_solo.model.backbone", "keras_solo.model.efficientnet_lite", "keras_solo.model.fpn",
     "keras_solo.model.pyramid", "keras_solo.model.heads", "keras_solo.model.attention", "keras_solo.model"),
    ("keras_solo.targets", "keras_solo.losses", "keras_solo.postprocess", "keras_solo.optimizers"),
    ("keras_solo.model.solo",),
    # The export graph (network + top-K decode) is part of the model; the rest of export is above.
    ("keras_solo.builders", "keras_solo.engine", "keras_solo.export.graph", "keras_solo.train",
     "keras_solo.evaluate", "keras_solo.profile"),
    ("keras_solo.ablation", "keras_solo.export", "keras_solo.litert_profile", "keras_solo.benchmark"),
    ("keras_solo.api",),
    ("keras_solo.cli",),
]


def rank_of(module):
    best = None
    for rank, prefixes in enumerate(RANKS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    return None if best is None else best[0]


def modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield (rel[: -len(".__init__")] if rel.endswith(".__init__") else rel), path


def imported(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_solo"):
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("keras_solo"):
                    yield alias.name


ALL = sorted(modules())


def test_every_module_has_a_rank():
    missing = [m for m, _ in ALL if m != "keras_solo" and rank_of(m) is None]
    assert not missing, f"add these modules to RANKS: {missing}"


@pytest.mark.parametrize("module,path", ALL, ids=[m for m, _ in ALL])
def test_imports_only_from_the_left(module, path):
    own = rank_of(module)
    if own is None:
        return
    for target in imported(path):
        other = rank_of(target)
        if other is not None:
            assert other <= own, f"{module} (rank {own}) imports {target} (rank {other})"


def test_data_does_not_need_tensorflow():
    """coco/transforms/examples/synthetic/convert/inspect are numpy/cv2 only;
    of the two batching adapters, pipeline (tf.data) may import TensorFlow
    and loader (keras.utils.PyDataset) Keras only."""
    for module, path in ALL:
        text = open(path, encoding="utf-8").read()
        if module == "keras_solo.data.loader":
            assert "import tensorflow" not in text, module
        elif module.startswith("keras_solo.data.") and not module.endswith("pipeline"):
            assert "import tensorflow" not in text and "import keras" not in text, module


RUNTIME_FILES = ("keras_solo/__init__.py", "keras_solo/errors.py", "keras_solo/runtime/")
THIRD_PARTY_OF_RUNTIME = {"numpy", "cv2", "ai_edge_litert", "onnxruntime", "tqdm"}


def test_the_runtime_needs_only_its_own_files():
    """keras_solo.runtime (what a device installs) imports of keras_solo only
    itself and keras_solo.errors, and of other packages only numpy, cv2, the
    model runtimes and (optional) tqdm: tests/test_device_runtime.py copies
    RUNTIME_FILES alone and runs them."""
    import sys

    stdlib = set(sys.stdlib_module_names)
    for module, path in ALL:
        if not (module == "keras_solo.runtime" or module.startswith("keras_solo.runtime.")):
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                top = name.split(".")[0]
                if top == "keras_solo":
                    assert name == "keras_solo.errors" or name.startswith("keras_solo.runtime"), (module, name)
                else:
                    assert top in stdlib or top in THIRD_PARTY_OF_RUNTIME, (module, name)
