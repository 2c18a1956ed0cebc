"""Shared pytest fixtures."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from helpers import write_tiny_coco  # noqa: E402


@pytest.fixture
def tiny_coco(tmp_path):
    """A freshly written tiny COCO dataset (see ``tests/helpers.py``)."""
    return write_tiny_coco(tmp_path)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """8 synthetic 128x64 images for the subprocess training tests (interrupt, multi-worker)."""
    from keras_solo.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("syn")
    make_synthetic(str(root), images=8, size=(128, 64), seed=0)
    return root
