"""Reader for a segmentation dataset folder (``images/`` + ``masks/`` matched by file stem, as the engine expects).

Images open as one stack (an Image layer) and their masks as a Labels layer on top, so scrolling the slider walks
through the pairs. Files are read lazily with dask: a 1000-pair folder opens at once and only the pairs looked at are
decoded. Pairs of different sizes are padded (bottom and right) to the largest one; each pair's name and original
size are kept in the layer metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from alignflow.data import read_image, read_mask, read_size, scan_dataset

from ..arrays import pad_to, stack_metadata, stack_shape

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | Path | Sequence[str | Path]


def is_dataset_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / "images").is_dir() and (path / "masks").is_dir()


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """napari's reader hook: a reader for a dataset folder, None for anything else (another reader gets a try)."""
    first = path[0] if isinstance(path, (list, tuple)) else path
    return read_dataset_folder if is_dataset_folder(first) else None


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
    metadata = stack_metadata([pair.stem for pair in folder.pairs], sizes, alignflow_dataset=str(Path(root)))
    images = lazy_stack([pair.image for pair in folder.pairs], read_image, sizes, channels=3)
    masks = lazy_stack([pair.mask for pair in folder.pairs], read_mask, sizes, channels=None)
    return [
        (images, {"name": f"{name} images", "rgb": True, "metadata": metadata}, "image"),
        (masks, {"name": f"{name} masks", "opacity": 0.5, "metadata": metadata}, "labels"),
    ]


def read_dataset_folder(path: PathOrPaths) -> list[LayerData]:
    paths = path if isinstance(path, (list, tuple)) else [path]
    return [layer for folder in paths for layer in dataset_layers(folder)]
