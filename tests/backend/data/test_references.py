"""Choosing the few target references: deterministic, sorted, and clear errors when too few are available."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignflow.data import load_reference_images, select_references
from alignflow.errors import InputError


def test_select_is_deterministic_and_sorted(clinicdb: Path) -> None:
    folder = clinicdb / "images"
    first = select_references(folder, count=8, seed=1)
    assert first == select_references(folder, count=8, seed=1) == sorted(first)
    assert len(set(first)) == 8 and first != select_references(folder, count=8, seed=2)
    assert len(select_references(folder)) == 612
    assert select_references(list(reversed(first)), count=3, seed=0) == select_references(first, count=3, seed=0)


def test_too_few_or_bad_count(clinicdb: Path, tmp_path: Path) -> None:
    few = select_references(clinicdb / "images", count=3, seed=0)
    for path in few:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    with pytest.raises(InputError) as err:
        select_references(tmp_path, count=5)
    message = str(err.value)
    assert message.startswith("references") and str(tmp_path) in message and "got 3" in message
    with pytest.raises(InputError, match="references"):
        select_references(tmp_path, count=0)
    with pytest.raises(InputError, match="nothing_here"):
        select_references(tmp_path / "nothing_here", count=1)


def test_load_reference_images(clinicdb: Path) -> None:
    paths = select_references(clinicdb / "images", count=4, seed=0)
    batch = load_reference_images(paths, 32)
    assert batch.shape == (4, 3, 32, 32)
    assert 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0
    with pytest.raises(InputError, match="references"):
        load_reference_images([], 32)
