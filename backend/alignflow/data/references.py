"""The few target-domain reference images that the generator is aligned to."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from alignflow.data.io import list_images, read_image, resize_image, to_tensor
from alignflow.errors import InputError


def _check_count(count: int, available: int, source: Path | str | Sequence[Path]) -> None:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise InputError("references", "a count of at least 1 reference image", got=repr(count))
    if count > available:
        where = source if isinstance(source, (str, Path)) else "the given files"
        raise InputError("references", f"at least {count} images in {where}", got=str(available))


def select_references(source: Path | str | Sequence[Path], count: int | None = None, seed: int = 0) -> list[Path]:
    """Pick ``count`` reference images from a folder or a list (all when ``None``), deterministically for ``seed``.

    The candidates are sorted first so the choice depends only on the files, not on the order they were given;
    the result is sorted so logs and checkpoints list references in a stable order.
    """
    candidates = sorted(list_images(source))
    if count is None:
        return candidates
    _check_count(count, len(candidates), source)
    chosen = np.random.default_rng(seed).choice(len(candidates), size=int(count), replace=False)
    return sorted(candidates[i] for i in chosen)


def load_reference_images(paths: Sequence[Path | str], size: int) -> torch.Tensor:
    """Read, square-resize (antialiased) and stack reference images as ``float32 [N, 3, size, size]`` in [0, 1]."""
    if len(paths) == 0:
        raise InputError("references", "at least 1 reference image", got="0")
    return torch.stack([to_tensor(resize_image(read_image(Path(p)), size)) for p in paths])
