"""Plain ``images/`` + ``masks/`` folders: the layout the engine itself reads (train, align, augment --source)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alignflow.atomic import atomic_write_json
from alignflow.data import write_image, write_mask
from alignflow.export.labels import LabelMap


class FoldersWriter:
    """``images/<case>.png`` (RGB) and ``masks/<case>.png`` (binary as 0/255 so viewers show it, else class ids)."""

    def __init__(self, root: Path, labels: LabelMap, name: str):
        self.root, self.labels, self.name = Path(root), labels, name
        self.binary = len(labels.names) == 2

    def write_case(self, case: str, image: np.ndarray, mask: np.ndarray) -> dict[str, str]:
        files = {"image": f"images/{case}.png", "mask": f"masks/{case}.png"}
        write_image(self.root / files["image"], image)
        write_mask(self.root / files["mask"], mask, binary_as_255=self.binary)
        return files

    def finish(self, cases: list[str]) -> None:
        atomic_write_json(self.root / "labels.json", self.labels.as_json())
