"""Fixtures of the runner tests."""

from pathlib import Path

import pytest


@pytest.fixture()
def source(tmp_path, kvasir, make_pairs) -> Path:
    """Four real Kvasir-SEG pairs."""
    make_pairs(kvasir, tmp_path / "data", 4)
    return tmp_path / "data"
