"""File > Open Sample > AlignFlow phantom: the engine's bundled two-scanner phantom, generated on first use."""

from __future__ import annotations

from alignflow.data import phantom_dir

from .readers.dataset_folder import LayerData, dataset_layers


def phantom_sample() -> list[LayerData]:
    root = phantom_dir()
    return dataset_layers(root / "source", "phantom source") + dataset_layers(root / "target", "phantom target")
