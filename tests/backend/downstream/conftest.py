"""Small real datasets for the downstream tests: Kvasir-SEG pairs, and colour-shifted copies of other Kvasir-SEG
pairs standing in for a generator's synthetic pairs (same layout as ``alignflow generate`` writes)."""

from pathlib import Path

import numpy as np
import pytest

from alignflow.data import read_image, read_mask, write_image, write_mask


@pytest.fixture(scope="session")
def kvasir_train(tmp_path_factory, kvasir, make_pairs) -> Path:
    root = tmp_path_factory.mktemp("downstream_train")
    make_pairs(kvasir, root, 8)
    return root


@pytest.fixture(scope="session")
def kvasir_test(tmp_path_factory, kvasir, make_pairs) -> Path:
    root = tmp_path_factory.mktemp("downstream_test")
    make_pairs(kvasir, root, 4, start=8)
    return root


@pytest.fixture(scope="session")
def synthetic_pairs(tmp_path_factory, kvasir) -> Path:
    """Four Kvasir-SEG pairs (not in train or test) with a strong blue cast, named like generated samples."""
    root = tmp_path_factory.mktemp("downstream_synthetic")
    images = sorted((kvasir / "images").iterdir())[12:16]
    for index, path in enumerate(images):
        shifted = read_image(path).astype(np.float32) * np.array([0.6, 0.8, 1.0]) + np.array([0, 10, 60])
        write_image(root / "images" / f"synthetic_{index:03d}.png", np.clip(shifted, 0, 255).astype(np.uint8))
        write_mask(root / "masks" / f"synthetic_{index:03d}.png", read_mask(kvasir / "masks" / path.name))
    return root
