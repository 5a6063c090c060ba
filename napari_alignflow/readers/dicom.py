"""DICOM reader (pydicom): single-frame and multi-frame files, in modality units (rescale slope/intercept applied).

Several files dropped together stack along the first axis in their InstanceNumber order, so a series opens as a
volume whose 2-D slices the slider selects; files of different sizes open as separate layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from alignflow.errors import InputError

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | Path | Sequence[str | Path]
SUFFIXES = (".dcm", ".dicom")


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    paths = path if isinstance(path, (list, tuple)) else [path]
    return read_dicom if all(str(p).lower().endswith(SUFFIXES) for p in paths) else None


def read_slices(file: str | Path) -> tuple[np.ndarray, pydicom.Dataset]:
    """Pixel data of one file as float32 (frames x) H x W in modality units, or RGB as uint8 H x W x 3."""
    try:
        dataset = pydicom.dcmread(file)
        pixels = dataset.pixel_array
    except (InvalidDicomError, AttributeError, ValueError, OSError) as error:
        raise InputError(file, "a DICOM file with pixel data", f"{type(error).__name__}: {error}") from None
    if getattr(dataset, "PhotometricInterpretation", "") == "RGB" or (pixels.ndim >= 3 and pixels.shape[-1] == 3):
        return pixels.astype(np.uint8, copy=False), dataset
    # The modality LUT turns stored values into physical units (Hounsfield units for CT).
    return pydicom.pixels.apply_modality_lut(pixels, dataset).astype(np.float32), dataset


def read_dicom(path: PathOrPaths) -> list[LayerData]:
    paths = [Path(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    read = [(file, *read_slices(file)) for file in paths]
    read.sort(key=lambda item: int(getattr(item[2], "InstanceNumber", 0) or 0))
    groups: dict[tuple[int, ...], list[tuple[Path, np.ndarray]]] = {}
    for file, pixels, _ in read:
        groups.setdefault(pixels.shape, []).append((file, pixels))
    layers = []
    for members in groups.values():
        stack = np.stack([pixels for _, pixels in members]) if len(members) > 1 else members[0][1]
        rgb = stack.dtype == np.uint8 and stack.shape[-1] == 3
        name = members[0][0].stem if len(members) == 1 else f"{members[0][0].parent.name} ({len(members)} files)"
        layers.append((stack, {"name": name, "rgb": rgb, "metadata": {"files": [str(f) for f, _ in members]}}, "image"))
    return layers
