"""NIfTI reader (nibabel): a volume opens with its slices along the first axis, so napari's slider selects a 2-D slice.

NIfTI stores (x, y, z); napari shows the last two axes, so the volume is transposed to (z, y, x). Voxel spacing
becomes the layer scale, which keeps anisotropic volumes in proportion in the other views.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from alignflow.errors import InputError

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | Path | Sequence[str | Path]


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    paths = path if isinstance(path, (list, tuple)) else [path]
    return read_nifti if all(str(p).lower().endswith((".nii", ".nii.gz")) for p in paths) else None


def read_volume(file: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """The volume as float32 (z, y, x) (or (y, x) for a 2-D image) and its voxel spacing in the same order."""
    try:
        image = nib.load(str(file))
        volume = np.asarray(image.dataobj, dtype=np.float32)  # scaled by the header's slope/intercept
    except (ImageFileError, OSError, ValueError, EOFError) as error:
        raise InputError(file, "a NIfTI file (.nii or .nii.gz)", f"{type(error).__name__}: {error}") from None
    volume = np.squeeze(volume)
    if volume.ndim not in (2, 3):
        raise InputError(file, "a 2-D image or a 3-D volume", f"an array of shape {volume.shape}")
    spacing = tuple(float(s) for s in image.header.get_zooms()[: volume.ndim])
    return np.ascontiguousarray(volume.T), spacing[::-1]


def read_nifti(path: PathOrPaths) -> list[LayerData]:
    layers = []
    for file in path if isinstance(path, (list, tuple)) else [path]:
        volume, spacing = read_volume(file)
        name = Path(file).name.removesuffix(".gz").removesuffix(".nii")
        layers.append((volume, {"name": name, "scale": spacing, "metadata": {"file": str(file)}}, "image"))
    return layers
