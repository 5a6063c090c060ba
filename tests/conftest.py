"""Shared test fixtures: real data and real weights from ../shared, never copied into the repository."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ALIGNFLOW_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
WEIGHTS = SHARED / "weights"

# Product code fetches weights with pooch; tests point the documented override at the shared folder (no internet).
os.environ.setdefault("ALIGNFLOW_WEIGHTS_DIR", str(WEIGHTS))
# The engine's cache (phantom, feature and latent caches, the plugin's generated pairs) goes to a folder of this test
# session, never the user's: a cached entry must not make a test pass that would fail on a fresh machine.
os.environ.setdefault("ALIGNFLOW_CACHE_DIR", tempfile.mkdtemp(prefix="alignflow-test-cache-"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"real test data not found at {DATA}; set ALIGNFLOW_SHARED to the shared/ folder")
    return DATA


@pytest.fixture(scope="session")
def kvasir(shared_data: Path) -> Path:
    return shared_data / "Kvasir-SEG"


@pytest.fixture(scope="session")
def clinicdb(shared_data: Path) -> Path:
    return shared_data / "CVC-ClinicDB"


def copy_pairs(real: Path, root: Path, count: int, start: int = 0) -> list[str]:
    """A small dataset at ``root`` made of real pairs (sorted by name) of ``real``; returns their file names.

    Tests that modify files work on such a copy in tmp_path, never on ../shared.
    """
    names = sorted(p.name for p in (real / "images").iterdir())[start : start + count]
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(real / sub / name, root / sub / name)
    return names


@pytest.fixture(scope="session")
def make_pairs() -> Callable[..., list[str]]:
    return copy_pairs
