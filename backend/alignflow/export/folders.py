"""Plain ``images/`` + ``masks/`` folders: the layout the engine itself reads (train, align, augment --source)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from alignflow.atomic import atomic_write_json
from alignflow.data import write_image, write_mask
from alignflow.export.labels import LabelMap


class FoldersWriter:
    """``images/<case>.png`` (RGB) and ``masks/<case>.png`` (binary as 0/255 so viewers show it, else class ids)."""

    def __init__(self, root: Path, labels: LabelMap, name: str):
        self.root, self.labels, self.name = Path(root), labels, name
        self.binary = len(labels.names) == 2

    def case_files(self, case: str) -> dict[str, str]:
        return {"image": f"images/{case}.png", "mask": f"masks/{case}.png"}

    def write_case(self, case: str, image: np.ndarray, mask: np.ndarray) -> dict[str, str]:
        files = self.case_files(case)
        write_image(self.root / files["image"], image)
        write_mask(self.root / files["mask"], mask, binary_as_255=self.binary)
        return files

    def copy_case(self, case: str, of: dict[str, str], image: np.ndarray, mask: np.ndarray) -> dict[str, str]:
        return link_case_files(self.root, of, self.case_files(case))

    def finish(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_json(self.root / "labels.json", self.labels.as_json())


def link_case_files(root: Path, of: dict[str, str], files: dict[str, str]) -> dict[str, str]:
    """A copy of a written case as hard links (no extra disk space), or as copies where the file system has none."""
    for key, name in files.items():
        try:
            os.link(root / of[key], root / name)
        except OSError:
            shutil.copyfile(root / of[key], root / name)
    return files
