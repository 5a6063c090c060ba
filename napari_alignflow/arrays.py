"""Images of different sizes as one napari stack and back (no Qt here, so readers and widgets share it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad_to(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``array`` in the top-left corner of zeros of ``shape`` (its own dtype); padding goes bottom and right."""
    array = np.asarray(array)
    out = np.zeros(tuple(shape), dtype=array.dtype)
    out[tuple(slice(0, n) for n in array.shape)] = array
    return out


def stack_shape(sizes: Sequence[Sequence[int]]) -> tuple[int, int]:
    """The (height, width) that holds every (height, width) of ``sizes``."""
    return max(int(h) for h, *_ in sizes), max(int(w) for _, w, *_ in sizes)


def pad_stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """One stack of 2-D planes (or H x W x C pictures) of different sizes, each padded to the largest."""
    height, width = stack_shape([a.shape[:2] for a in arrays])
    return np.stack([pad_to(a, (height, width, *a.shape[2:])) for a in arrays])


def stack_metadata(names: Sequence[str], sizes: Sequence[Sequence[int]], **extra: object) -> dict[str, object]:
    """Layer metadata that lets :func:`napari_alignflow.widgets.common.layer_planes` crop the padding off again."""
    return {"names": list(names), "sizes": [[int(s[0]), int(s[1])] for s in sizes], **extra}
