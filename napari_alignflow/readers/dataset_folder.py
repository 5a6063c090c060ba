"""Reader for folders dropped on napari: a segmentation dataset folder, a folder of scans, a DICOM series folder.

- ``images/`` + ``masks/`` (matched by file stem, as the engine expects): the images as one stack (an Image layer)
  and their masks as a Labels layer on top, so the slider walks through the pairs.
- ``images/`` without ``masks/``: the images only, and a notification that says masks/ is missing (the target scans
  of a new scanner are often just that).
- a folder of image files (PNG, JPEG, TIFF ...): one stack; a folder of DICOM files: one stack per series.

Files are read lazily with dask: a 1000-pair folder opens at once and only the slices looked at are decoded. Slices
of different sizes are padded (bottom and right) to the largest; each slice's file name and original size are kept
in the layer metadata (``names``, ``sizes``), so references, generated pairs and exports keep the file names.
Any other folder is left to napari's own folder reader.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from alignflow.data import IMAGE_SUFFIXES, list_images, read_image, read_mask, read_size, scan_dataset

from ..arrays import pad_to, stack_metadata, stack_shape

LayerData = tuple[Any, ...]
PathOrPaths = str | Path | Sequence[str | Path]
NO_LAYERS: list[LayerData] = [(None,)]  # npe2's "read, nothing to add" (the reason is a notification)


def is_dataset_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / "images").is_dir() and (path / "masks").is_dir()


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """napari's reader hook for folders: a reader for the folders described above, else napari's own folder reader
    (so a drop that napari sends here by the reader preference still opens), else None."""
    paths = [Path(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    if not paths or not all(p.is_dir() for p in paths):
        return None
    if all(_kind(p) is not None for p in paths):
        return read_folders
    from napari_builtins.io import napari_get_reader  # e.g. a .zarr folder

    return napari_get_reader([str(p) for p in paths] if len(paths) > 1 else str(paths[0]))


def _kind(folder: Path) -> str | None:
    if is_dataset_folder(folder):
        return "dataset"
    if (folder / "images").is_dir():
        return "images only"
    if (folder / "masks").is_dir():
        return "masks only"
    from .dicom import is_dicom_file

    files = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")]
    if files and any(is_dicom_file(f) for f in files):
        return "dicom"
    if any(f.suffix.lower() in IMAGE_SUFFIXES for f in files):
        return "images"
    return None


def read_folders(path: PathOrPaths) -> list[LayerData]:
    paths = path if isinstance(path, (list, tuple)) else [path]
    layers = [layer for folder in paths for layer in folder_layers(Path(folder))]
    return [layer for layer in layers if layer[0] is not None] or NO_LAYERS


def folder_layers(folder: Path) -> list[LayerData]:
    from napari.utils.notifications import show_warning

    kind = _kind(folder)
    if kind == "dataset":
        return dataset_layers(folder)
    if kind == "images only":
        show_warning(f"AlignFlow: masks/ missing in {folder}: opened its images only (a labelled dataset folder holds "
                     "images/ and masks/ with matching file names)")
        return image_folder_layers(folder / "images", folder.name)
    if kind == "masks only":
        show_warning(f"AlignFlow: images/ missing in {folder}: nothing opened (a labelled dataset folder holds "
                     "images/ and masks/ with matching file names)")
        return NO_LAYERS
    if kind == "dicom":
        from .dicom import read_dicom_folder

        return read_dicom_folder(folder)
    return image_folder_layers(folder, folder.name)


def _padded(read: Callable[[Path], np.ndarray], file: Path, shape: tuple[int, ...]) -> np.ndarray:
    return pad_to(read(file), shape)


def lazy_stack(files: Sequence[Path], read: Callable[[Path], np.ndarray], sizes: Sequence[tuple[int, int]],
               channels: int | None) -> da.Array:
    """A dask stack of ``read(file)`` padded to the largest (H, W); nothing is decoded until napari shows a slice."""
    height, width = stack_shape(sizes)
    shape = (height, width) if channels is None else (height, width, channels)
    slices = [da.from_delayed(dask.delayed(_padded)(read, file, shape), shape=shape, dtype=np.uint8) for file in files]
    return da.stack(slices)


def dataset_layers(root: str | Path, name: str | None = None) -> list[LayerData]:
    """The image stack and the mask stack of a dataset folder as napari layer data."""
    folder = scan_dataset(root, check_masks=False)  # stems are matched now; bad files are named when shown
    name = name or Path(root).name
    sizes = [read_size(pair.image) for pair in folder.pairs]
    metadata = stack_metadata([pair.image.name for pair in folder.pairs], sizes, alignflow_dataset=str(Path(root)))
    images = lazy_stack([pair.image for pair in folder.pairs], read_image, sizes, channels=3)
    masks = lazy_stack([pair.mask for pair in folder.pairs], read_mask, sizes, channels=None)
    return [
        (images, {"name": f"{name} images", "rgb": True, "metadata": metadata}, "image"),
        (masks, {"name": f"{name} masks", "opacity": 0.5, "metadata": metadata}, "labels"),
    ]


def image_folder_layers(folder: Path, name: str) -> list[LayerData]:
    """The images of a folder as one lazy RGB stack named by the folder, each slice by its file."""
    files = list_images(folder)
    sizes = [read_size(file) for file in files]
    metadata = stack_metadata([file.name for file in files], sizes, alignflow_folder=str(folder))
    return [(lazy_stack(files, read_image, sizes, channels=3), {"name": name, "rgb": True, "metadata": metadata}, "image")]


# The dataset reader's old name (tests and the sample data use it).
read_dataset_folder = read_folders
