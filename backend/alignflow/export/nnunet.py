"""nnU-Net v2 raw dataset (``DatasetXXX_Name``) with a MONAI Decathlon-style datalist beside its dataset.json.

Layout and dataset.json fields follow nnU-Net's documentation (documentation/dataset_format.md): RGB natural images
are the one case where all channels live in one file, ``{case}_0000.png``, with channel_names R, G, B (as in its
Dataset120_RoadSegmentation example); labels are ``{case}.png`` with consecutive ids 0..K; PNG is lossless.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from alignflow.atomic import atomic_write_json
from alignflow.data import write_image, write_mask
from alignflow.errors import InputError
from alignflow.export.labels import LabelMap

DATASET_NAME = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_-]+)$")
FILE_ENDING = ".png"
DATALIST_FILE = "datalist.json"


def check_dataset_folder_name(out: Path) -> None:
    """nnU-Net finds datasets by folder name: three-digit id, underscore, name."""
    if not DATASET_NAME.match(Path(out).name):
        raise InputError(out, "an nnU-Net dataset folder named DatasetXXX_Name (three-digit id, e.g. Dataset501_Polyps)",
                         repr(Path(out).name))


class NnUNetWriter:
    """``imagesTr/{case}_0000.png``, ``labelsTr/{case}.png``, ``dataset.json`` and ``datalist.json`` (MONAI)."""

    def __init__(self, root: Path, labels: LabelMap, name: str):
        self.root, self.labels, self.name = Path(root), labels, name

    def write_case(self, case: str, image: np.ndarray, mask: np.ndarray) -> dict[str, str]:
        files = {"image": f"imagesTr/{case}_0000{FILE_ENDING}", "mask": f"labelsTr/{case}{FILE_ENDING}"}
        write_image(self.root / files["image"], image)
        write_mask(self.root / files["mask"], mask, binary_as_255=False)  # nnU-Net reads the raw ids 0..K
        return files

    def finish(self, cases: list[str]) -> None:
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
