"""The procedural demo sample: deterministic bytes, a known colour cast between domains, non-empty masks, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignflow.data import (
    ScannerShift,
    apply_scanner_shift,
    list_images,
    make_phantom,
    phantom_dir,
    read_image,
    read_mask,
    scan_dataset,
)
from alignflow.errors import InputError


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def _mean_colour(folder: Path) -> np.ndarray:
    return np.mean([read_image(p).reshape(-1, 3).mean(0) / 255.0 for p in list_images(folder)], axis=0)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_phantom(tmp_path_factory.mktemp("phantom"))


def test_defaults_scan_cleanly(phantom: dict) -> None:
    source, target = scan_dataset(phantom["source"]), scan_dataset(phantom["target"])
    assert len(source.pairs) == 48 and len(target.pairs) == 32
    assert source.num_classes == target.num_classes == 2
    for pair in source.pairs + target.pairs:
        mask = read_mask(pair.mask)
        assert 0.005 < mask.mean() < 0.6, pair.mask.name


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = make_phantom(tmp_path / "a", n_source=4, n_target=3, size=64, seed=7)
    b = make_phantom(tmp_path / "b", n_source=4, n_target=3, size=64, seed=7)
    c = make_phantom(tmp_path / "c", n_source=4, n_target=3, size=64, seed=8)
    assert _bytes(a["root"]) == _bytes(b["root"]) != _bytes(c["root"])
    assert len(_bytes(a["root"])) == 14


def test_target_differs_by_the_intended_cast(phantom: dict) -> None:
    source, target = _mean_colour(phantom["source"] / "images"), _mean_colour(phantom["target"] / "images")
    shift = ScannerShift(**phantom["shift"])
    assert target[2] - source[2] > 0.08 and source[0] - target[0] > 0.08  # blue-green cast, less red
    rng = np.random.default_rng(0)
    simulated = np.mean(
        [
            apply_scanner_shift(read_image(p) / 255.0, shift, rng).reshape(-1, 3).mean(0)
            for p in list_images(phantom["source"] / "images")
        ],
        axis=0,
    )
    assert np.abs(simulated - target).max() < 0.03


def test_complete_phantom_is_not_rewritten(tmp_path: Path) -> None:
    info = make_phantom(tmp_path, n_source=2, n_target=2, size=64)
    stamp = tmp_path / "phantom.json"
    before = stamp.stat().st_mtime_ns
    assert make_phantom(tmp_path, n_source=2, n_target=2, size=64) == info
    assert stamp.stat().st_mtime_ns == before
    make_phantom(tmp_path, n_source=3, n_target=2, size=64)  # other parameters: rebuilt in place
    assert len(list_images(tmp_path / "source" / "images")) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(InputError, match="n_source"):
        make_phantom(tmp_path, n_source=0)


def test_phantom_dir_uses_the_cache_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path))
    path = phantom_dir()
    assert path == tmp_path / "phantom" and (path / "phantom.json").is_file()
    assert len(list_images(path / "target" / "masks")) == 32
