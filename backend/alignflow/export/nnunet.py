"""nnU-Net v2 raw dataset (``DatasetXXX_Name``) with a MONAI Decathlon-style datalist beside its dataset.json.

Layout and dataset.json fields follow nnU-Net's documentation (documentation/dataset_format.md): RGB natural images
are the one case where all channels live in one file, ``{case}_0000.png``, with channel_names R, G, B (as in its
Dataset120_RoadSegmentation example); labels are ``{case}.png`` with consecutive ids 0..K; PNG is lossless.

``splits_final.json`` (documentation/manual_data_splits.md: a list of folds, each {"train": [...], "val": [...]}) holds
five folds over the real pairs: nnU-Net's own random folds would validate on one copy of a case while training on
another, and on a real image while training on its translation. nnU-Net reads it from
``nnUNet_preprocessed/DatasetXXX_Name/``, so it is copied there after planning.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from alignflow.atomic import atomic_write_json
from alignflow.data import write_image, write_mask
from alignflow.errors import InputError
from alignflow.export.folders import link_case_files
from alignflow.export.labels import LabelMap
from alignflow.export.samples import REAL

DATASET_NAME = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_-]+)$")
FILE_ENDING = ".png"
DATALIST_FILE = "datalist.json"
SPLITS_FILE = "splits_final.json"
FOLDS = 5
SPLIT_SEED = 12345  # a fixed shuffle (the number nnU-Net seeds its own folds with; the folds differ)
log = logging.getLogger(__name__)


def check_dataset_folder_name(out: Path) -> None:
    """nnU-Net finds datasets by folder name: three-digit id, underscore, name."""
    if not DATASET_NAME.match(Path(out).name):
        raise InputError(out, "an nnU-Net dataset folder named DatasetXXX_Name (three-digit id, e.g. Dataset501_Polyps)",
                         repr(Path(out).name))


class NnUNetWriter:
    """``imagesTr/{case}_0000.png``, ``labelsTr/{case}.png``, ``dataset.json`` and ``datalist.json`` (MONAI)."""

    def __init__(self, root: Path, labels: LabelMap, name: str):
        self.root, self.labels, self.name = Path(root), labels, name

    def case_files(self, case: str) -> dict[str, str]:
        return {"image": f"imagesTr/{case}_0000{FILE_ENDING}", "mask": f"labelsTr/{case}{FILE_ENDING}"}

    def write_case(self, case: str, image: np.ndarray, mask: np.ndarray) -> dict[str, str]:
        files = self.case_files(case)
        write_image(self.root / files["image"], image)
        write_mask(self.root / files["mask"], mask, binary_as_255=False)  # nnU-Net reads the raw ids 0..K
        return files

    def copy_case(self, case: str, of: dict[str, str], image: np.ndarray, mask: np.ndarray) -> dict[str, str]:
        return link_case_files(self.root, of, self.case_files(case))

    def finish(self, rows: list[dict[str, Any]]) -> None:
        cases = [row["case"] for row in rows]
        atomic_write_json(self.root / "dataset.json", {
            "channel_names": {"0": "R", "1": "G", "2": "B"},
            "labels": self.labels.name_to_id,
            "numTraining": len(cases),
            "file_ending": FILE_ENDING,
            "name": self.name,
            "description": "exported by alignflow; provenance of every case in manifest.json",
        })
        # Decathlon datalist: paths relative to this file, which MONAI's load_decathlon_datalist resolves.
        atomic_write_json(self.root / DATALIST_FILE, {
            "name": self.name,
            "labels": self.labels.id_to_name,
            "numTraining": len(cases),
            "training": [{"image": f"imagesTr/{case}_0000{FILE_ENDING}", "label": f"labelsTr/{case}{FILE_ENDING}"}
                         for case in cases],
        })
        splits = cross_validation_splits(rows)
        if splits:
            atomic_write_json(self.root / SPLITS_FILE, splits)
        else:
            log.info("fewer than %d real pairs: no %s (nnU-Net makes its own folds)", FOLDS, SPLITS_FILE)


def cross_validation_splits(rows: list[dict[str, Any]], folds: int = FOLDS) -> list[dict[str, list[str]]]:
    """``folds`` folds over the real pairs (manifest rows), grouped by source mask: each fold validates on real cases
    only (no copies) and trains on every case, of any origin, whose source mask is not among them. Empty with fewer
    real pairs than folds."""
    groups = sorted({_source(row) for row in rows if row["origin"] == REAL})
    if len(groups) < folds:
        return []
    order = np.random.default_rng(SPLIT_SEED).permutation(len(groups))
    splits = []
    for fold in np.array_split(order, folds):
        held_out = {groups[i] for i in fold}
        splits.append({"train": [row["case"] for row in rows if _source(row) not in held_out],
                       "val": [row["case"] for row in rows if row["origin"] == REAL and row["copy_of"] is None and _source(row) in held_out]})
    return splits


def _source(row: dict[str, Any]) -> str:
    """The source mask a case was made from (a real case's is its own): cases that share it share a lesion."""
    return Path(row["source_mask"]).stem if row.get("source_mask") else row["case"]
