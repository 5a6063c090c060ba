"""Plugin tests: real widgets in a real viewer (pytest-qt, napari's make_napari_viewer), on small real data.

Run under Xvfb (``make test`` does); without a display Qt falls back to its offscreen platform.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def clinicdb_small(tmp_path_factory, clinicdb, make_pairs) -> Path:
    """Six real CVC-ClinicDB pairs as a dataset folder."""
    root = tmp_path_factory.mktemp("clinicdb_small")
    make_pairs(clinicdb, root, 6, start=100)
    return root


@pytest.fixture(scope="session")
def kvasir_small(tmp_path_factory, kvasir, make_pairs) -> Path:
    root = tmp_path_factory.mktemp("kvasir_small")
    make_pairs(kvasir, root, 8)
    return root


def wait_for_worker(qtbot, worker, timeout_ms: int = 60_000) -> None:
    with qtbot.waitSignal(worker.finished, timeout=timeout_ms):
        pass


@pytest.fixture
def image_files(clinicdb_small) -> list[Path]:
    return sorted((clinicdb_small / "images").iterdir())


def first_image(layer) -> np.ndarray:
    return np.asarray(layer.data[0])


__all__ = ["wait_for_worker", "shutil"]
