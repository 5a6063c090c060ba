"""DICOM reader (pydicom): single-frame and multi-frame files, in modality units (rescale slope/intercept applied).

A series opens as one stack, as DICOM viewers do: a dropped file brings its whole series (the files of its folder
with the same SeriesInstanceUID), slices in InstanceNumber order, each named by its file. napari hands a multi-file
drop to the reader one file at a time; the files of a series already opened by the same drop add nothing, so three
files of one CT series give one stack, not three layers. A dropped folder opens one stack per series in it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from alignflow.errors import InputError

LayerData = tuple[Any, ...]
PathOrPaths = str | Path | Sequence[str | Path]
SUFFIXES = (".dcm", ".dicom")
NO_LAYERS: list[LayerData] = [(None,)]  # npe2's "read, nothing to add"
# A drop of N files reaches the reader as N calls within a moment; a series opened less than this long ago by the
# same drop is not opened again for its other files.
SAME_DROP_S = 5.0
_OPENED: dict[frozenset[Path], float] = {}


def is_dicom_file(path: Path) -> bool:
    """A .dcm/.dicom name, or a file with the DICOM preamble (series exported without suffixes)."""
    if path.suffix.lower() in SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


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


def _series_uid(file: Path) -> str | None:
    try:
        return getattr(pydicom.dcmread(file, stop_before_pixels=True), "SeriesInstanceUID", None)
    except (InvalidDicomError, OSError, ValueError):
        return None


def series_files(file: Path) -> list[Path]:
    """The files of ``file``'s series in its folder (only ``file`` when it names no series)."""
    uid = _series_uid(file)
    if uid is None:
        return [file]
    members = [f for f in sorted(file.parent.iterdir()) if f.is_file() and is_dicom_file(f) and _series_uid(f) == uid]
    return members or [file]


def read_dicom(path: PathOrPaths) -> list[LayerData]:
    """Several files (napari's stacked open, shift-drop): one stack of exactly those files. One file: its series as
    one stack, unless the same drop opened that series already (see the module doc)."""
    if isinstance(path, (list, tuple)) and len(path) > 1:
        return stack_layers([Path(p) for p in path])
    file = Path(path[0] if isinstance(path, (list, tuple)) else path)
    now = time.monotonic()
    for series, opened in list(_OPENED.items()):
        if now - opened > SAME_DROP_S:
            del _OPENED[series]
    if any(file.resolve() in series for series in _OPENED):
        return NO_LAYERS
    members = series_files(file)
    _OPENED[frozenset(f.resolve() for f in members)] = now
    return stack_layers(members)


def read_dicom_folder(folder: Path) -> list[LayerData]:
    """One stack per series of the DICOM files in ``folder``."""
    by_series: dict[str, list[Path]] = {}
    for file in sorted(folder.iterdir()):
        if file.is_file() and is_dicom_file(file):
            by_series.setdefault(_series_uid(file) or str(file), []).append(file)
    return [layer for members in by_series.values() for layer in stack_layers(members)]


def stack_layers(files: Sequence[Path]) -> list[LayerData]:
    """The files as stacks in InstanceNumber order (files of another size open as a stack of their own)."""
    read = [(Path(file), *read_slices(file)) for file in files]
    read.sort(key=lambda item: int(getattr(item[2], "InstanceNumber", 0) or 0))
    groups: dict[tuple[int, ...], list[tuple[Path, np.ndarray, pydicom.Dataset]]] = {}
    for item in read:
        groups.setdefault(item[1].shape, []).append(item)
    layers = []
    for members in groups.values():
        stack = np.stack([pixels for _, pixels, _ in members]) if len(members) > 1 else members[0][1]
        rgb = stack.dtype == np.uint8 and stack.shape[-1] == 3
        first = members[0]
        description = str(getattr(first[2], "SeriesDescription", "") or "").strip()
        if len(members) == 1:
            name = first[0].stem
        else:
            name = f"{description or first[0].parent.name} ({len(members)} slices)"
        names = [file.name for file, _, _ in members]
        metadata = {"files": [str(file) for file, _, _ in members], "names": names if len(members) > 1 else [first[0].name]}
        layers.append((stack, {"name": name, "rgb": rgb, "metadata": metadata}, "image"))
    return layers
