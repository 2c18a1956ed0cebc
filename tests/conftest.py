"""Shared pytest fixtures."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from helpers import write_tiny_coco  # noqa: E402


@pytest.fixture
def tiny_coco(tmp_path):
    """A freshly written tiny COCO dataset (see ``tests/helpers.py``)."""
    return write_tiny_coco(tmp_path)
