"""Segmentation datasets on disk (``root/images`` + ``root/masks`` matched by file stem) and their tensors.

The scan reports every problem of a dataset in one error, because a user fixing a folder one complaint per run
would otherwise have to restart the tool many times.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from alignflow.data.io import (
    is_image_file,
    quote_values,
    read_image,
    read_mask,
    read_mask_and_stored_values,
    read_size,
    resize_image,
    resize_mask,
    unique_values,
)
from alignflow.errors import InputError

# Pillow and zlib release the GIL while decoding, so a few threads speed up reading on a 2-core machine.
_READ_THREADS = 4


@dataclass(frozen=True)
class Pair:
    """One training example: an image file and its mask file sharing ``stem``."""

    stem: str
    image: Path
    mask: Path


@dataclass
class SegmentationFolder:
    """A scanned dataset. ``class_values`` are the class ids seen in the masks (empty when masks were not read)."""

    root: Path
    pairs: list[Pair]
    class_values: tuple[int, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        """Highest class id + 1, at least 2: a dataset whose masks are all background is still binary."""
        return max(2, (max(self.class_values) + 1) if self.class_values else 2)

    def __len__(self) -> int:
        return len(self.pairs)


class DatasetError(InputError):
    """All problems of a dataset at once; ``problems`` holds ``(file, description)`` for each of them."""

    def __init__(self, problems: Sequence[tuple[Path, str]], max_listed: int = 20):
        self.problems = list(problems)
        listed = "; ".join(f"{path.name}: {text}" for path, text in self.problems[:max_listed])
        more = len(self.problems) - min(len(self.problems), max_listed)
        got = f"{len(self.problems)} problem(s): {listed}" + (f"; ... and {more} more" if more > 0 else "")
        super().__init__(self.problems[0][0], "images/ and masks/ that match one to one by file stem", got=got)


# --------------------------------------------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------------------------------------------


def _require_folder(path: Path, what: str) -> None:
    if not path.is_dir():
        raise InputError(path, f"a folder of {what}", got="no such folder")


def _files_by_stem(folder: Path, problems: list[tuple[Path, str]]) -> dict[str, Path]:
    """Supported files keyed by stem; a stem present with two suffixes (a.png and a.jpg) is a problem."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if path.is_file() and is_image_file(path):
            groups[path.stem].append(path)
    by_stem: dict[str, Path] = {}
    for stem, paths in sorted(groups.items()):
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            problems.append((paths[0], f"duplicate stem '{stem}' in {folder.name}/ ({names})"))
        by_stem[stem] = paths[0]
    return by_stem


def _match(images: dict[str, Path], masks: dict[str, Path], problems: list[tuple[Path, str]]) -> list[Pair]:
    for stem in sorted(images.keys() - masks.keys()):
        problems.append((images[stem], "image without a mask of the same stem in masks/"))
    for stem in sorted(masks.keys() - images.keys()):
        problems.append((masks[stem], "mask without an image of the same stem in images/"))
    return [Pair(stem, images[stem], masks[stem]) for stem in sorted(images.keys() & masks.keys())]


def _check_pair(pair: Pair) -> tuple[list[tuple[Path, str]], np.ndarray, tuple[int, ...] | None]:
    """Problems of one pair, the class ids present in its mask and the values stored in the mask file (None when it
    could not be read); the image is only read up to its header."""
    problems: list[tuple[Path, str]] = []
    image_shape = mask_ids = stored = None
    try:
        image_shape = read_size(pair.image)
    except InputError as err:
        problems.append((pair.image, _reason(err)))
    try:
        mask_ids, stored = read_mask_and_stored_values(pair.mask)
    except InputError as err:
        problems.append((pair.mask, _reason(err)))
    if mask_ids is None:
        return problems, np.zeros(0, np.uint8), None
    if image_shape is not None and mask_ids.shape != image_shape:
        problems.append((pair.mask, f"mask size {_hw(mask_ids.shape)} differs from image size {_hw(image_shape)}"))
    return problems, unique_values(mask_ids), stored


def _reason(err: InputError) -> str:
    return f"expected {err.expected}" + (f", got {err.got}" if err.got is not None else "")


def _hw(shape: Sequence[int]) -> str:
    return f"{shape[1]}x{shape[0]} (WxH)"


def scan_dataset(root: Path | str, *, check_masks: bool = True, max_problems: int = 20) -> SegmentationFolder:
    """Pair ``root/images/*`` with ``root/masks/*`` by stem and check them, raising one error for all problems.

    With ``check_masks`` every mask is decoded (values, size) and every image header read (size, PNG integrity);
    this costs about a second per thousand 256-px pairs. ``max_problems`` bounds how many are quoted in the error
    (all are counted and kept in :attr:`DatasetError.problems`).
    """
    root = Path(root)
    _require_folder(root, "a dataset (with images/ and masks/ inside)")
    _require_folder(root / "images", "images")
    _require_folder(root / "masks", "masks named like the images")
    problems: list[tuple[Path, str]] = []
    pairs = _match(_files_by_stem(root / "images", problems), _files_by_stem(root / "masks", problems), problems)
    if not pairs and not problems:
        raise InputError(root / "images", "at least one image with a mask of the same stem", got="none")
    class_values: tuple[int, ...] = ()
    if check_masks:
        class_values = _check_pairs(pairs, problems)
    if problems:
        raise DatasetError(problems, max_listed=max(1, max_problems))
    return SegmentationFolder(root=root, pairs=pairs, class_values=class_values)


def _check_pairs(pairs: Sequence[Pair], problems: list[tuple[Path, str]]) -> tuple[int, ...]:
    seen = np.zeros(256, dtype=bool)
    stored: list[tuple[Path, tuple[int, ...]]] = []
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        for pair, (pair_problems, values, stored_values) in zip(pairs, pool.map(_check_pair, pairs)):
            problems.extend(pair_problems)
            seen[values] = True
            if stored_values is not None:
                stored.append((pair.mask, stored_values))
    problems.extend(class_problems(stored))
    return tuple(int(v) for v in np.flatnonzero(seen))


def class_problems(stored: Sequence[tuple[Path, tuple[int, ...]]]) -> list[tuple[Path, str]]:
    """Masks whose values do not fit the dataset's classes, judged from the values stored in all its mask files.

    One file alone cannot tell a stray value from a class: {0, 128} is two valid class ids. The dataset can:

    * a dataset with 0/255 masks is binary: every mask holds 0 and 255 (or 0 and 1) only, so a mask with a stray
      128, or a 0..7 mask, is named with its values (it would otherwise turn the set into 129 or 8 classes);
    * otherwise the values are class ids 0..K-1. A few unused ids are fine ({0, 2}: a disc-and-cup set with the cup
      only; export renumbers them), but more missing ids than present ones mean stray values, not classes: a set of
      0/1 masks with one 0/128 mask is not a 129-class set, and the masks holding ids past the first gap are named.
    """
    binary_255 = [path for path, values in stored if 255 in values and set(values) <= {0, 255}]
    if binary_255:
        return [(path, f"values {quote_values(values)} in a binary dataset (masks such as {binary_255[0].name} hold 0/255): "
                       "a binary mask holds 0 and 255 (or 0 and 1) only; convert this one, or store every mask as class ids 0..K-1")
                for path, values in stored if not (set(values) <= {0, 255} or set(values) <= {0, 1})]
    present = sorted({value for _, values in stored for value in values})
    missing = sorted(set(range(present[-1] + 1)) - set(present)) if present else []
    if len(missing) <= len(present):
        return []
    return [(path, f"class ids {quote_values(values)}, but no mask of the dataset holds {quote_values(missing)}: class ids "
                   f"must be 0, 1, ..., K-1 (binary masks 0/255 or 0/1); map these values to consecutive ids")
            for path, values in stored if max(values, default=0) > missing[0]]


# --------------------------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------------------------


def _load_pair(pair: Pair, size: int) -> tuple[np.ndarray, np.ndarray]:
    image, mask = read_image(pair.image), read_mask(pair.mask)
    if image.shape[:2] != mask.shape:
        raise InputError(pair.mask, f"a mask of the image's size {_hw(image.shape)}", got=_hw(mask.shape))
    return resize_image(image, size), resize_mask(mask, size)


def load_pairs(
    folder: SegmentationFolder, size: int, indices: Iterable[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``float32 [N, 3, size, size]`` in [0, 1] and masks ``int64 [N, size, size]`` of class ids.

    Everything is squashed to a square rather than cropped: the whole field of view (and every lesion) stays in the
    training data, and outputs are resized back to the original mask size on export, which undoes the distortion.
    Images are resized with antialiasing, masks with nearest neighbour so they remain class ids.
    Memory: N x 3 x size^2 x 4 bytes (1000 pairs at 256 px take about 0.8 GB); pass ``indices`` to load a subset.
    """
    chosen = list(range(len(folder.pairs))) if indices is None else [int(i) for i in indices]
    for i in chosen:
        if not 0 <= i < len(folder.pairs):
            raise InputError("indices", f"indices in 0..{len(folder.pairs) - 1}", got=str(i))
    if not chosen:
        return torch.zeros(0, 3, size, size), torch.zeros(0, size, size, dtype=torch.long)
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        loaded = list(pool.map(lambda i: _load_pair(folder.pairs[i], size), chosen))
    images = torch.from_numpy(np.stack([im for im, _ in loaded])).permute(0, 3, 1, 2).float().div_(255.0)
    masks = torch.from_numpy(np.stack([m for _, m in loaded])).long()
    return images.contiguous(), masks


def load_masks(paths: Sequence[Path | str], size: int) -> torch.Tensor:
    """Masks ``int64 [N, size, size]`` of class ids from mask files (nearest-neighbour resize, as in ``load_pairs``)."""
    if not paths:
        return torch.zeros(0, size, size, dtype=torch.long)
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        loaded = list(pool.map(lambda path: resize_mask(read_mask(path), size), paths))
    return torch.from_numpy(np.stack(loaded)).long()


def random_flips(images: torch.Tensor, masks: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal and vertical flips, the same for an image and its mask (drawn per sample, from
    ``generator`` or torch's global one)."""
    for axis in (-1, -2):
        chosen = torch.rand(images.shape[0], generator=generator) < 0.5
        images = torch.where(chosen[:, None, None, None], images.flip(axis), images)
        masks = torch.where(chosen[:, None, None], masks.flip(axis), masks)
    return images, masks


# The four flips of the square (none, horizontal, vertical, both) as the tensor dims they reverse, with their names.
FLIPS: tuple[tuple[str, tuple[int, ...]], ...] = (("", ()), ("hflip", (-1,)), ("vflip", (-2,)), ("hvflip", (-1, -2)))


def flipped(tensor: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``tensor`` (images ``[N, C, H, W]`` or masks ``[N, H, W]``) flipped along ``dims`` (one of ``FLIPS``)."""
    return tensor.flip(dims) if dims else tensor


def all_flips(tensor: torch.Tensor) -> torch.Tensor:
    """The batch followed by its horizontal, vertical and double flips (``FLIPS`` order): ``4N`` samples."""
    return torch.cat([flipped(tensor, dims) for _, dims in FLIPS])


def split_indices(n: int, fractions_or_counts: Sequence[float] | Sequence[int], seed: int = 0) -> list[np.ndarray]:
    """Deterministically shuffle ``range(n)`` and cut it into parts (each returned sorted).

    Give all ints (counts) or all floats (fractions of ``n``). If they cover less than ``n`` the remainder is
    appended as a last part, so ``split_indices(1000, [100], seed)`` returns ``[held_out_100, other_900]``.
    """
    sizes = _part_sizes(n, list(fractions_or_counts))
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, *sizes])
    parts = [np.sort(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    if bounds[-1] < n:
        parts.append(np.sort(order[bounds[-1] :]))
    return parts


def _part_sizes(n: int, spec: list) -> list[int]:
    where = "fractions_or_counts"
    if n < 0 or not spec:
        raise InputError(where, "a non-empty list of counts or fractions and n >= 0", got=f"{spec!r}, n={n}")
    is_count = [isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in spec]
    if all(is_count):
        sizes = [int(x) for x in spec]
        if min(sizes) < 0 or sum(sizes) > n:
            raise InputError(where, f"non-negative counts summing to at most {n}", got=repr(spec))
        return sizes
    if any(is_count) or any(not isinstance(x, float) for x in spec):
        raise InputError(where, "either all integer counts or all float fractions", got=repr(spec))
    if min(spec) < 0 or sum(spec) > 1.0 + 1e-9:
        raise InputError(where, "non-negative fractions summing to at most 1", got=repr(spec))
    edges = np.rint(np.cumsum([0.0, *spec]) * n).astype(int).clip(0, n)
    return [int(b - a) for a, b in zip(edges[:-1], edges[1:])]


# --------------------------------------------------------------------------------------------------------------
# Mask <-> image renderings
# --------------------------------------------------------------------------------------------------------------


def _check_ids(mask_ids: torch.Tensor, num_classes: int) -> None:
    if num_classes < 2:
        raise InputError("num_classes", "at least 2", got=str(num_classes))
    if mask_ids.ndim != 3 or mask_ids.dtype.is_floating_point:
        raise InputError("mask_ids", "an integer [N, H, W] tensor", got=f"{mask_ids.dtype} {tuple(mask_ids.shape)}")
    if mask_ids.numel() and (int(mask_ids.min()) < 0 or int(mask_ids.max()) >= num_classes):
        got = f"{int(mask_ids.min())}..{int(mask_ids.max())}"
        raise InputError("mask_ids", f"class ids in 0..{num_classes - 1}", got=got)


def mask_to_rgb(mask_ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Render class ids as a grey image ``[N, 3, H, W]`` in [0, 1] that the image VAE can encode.

    Class ``k`` becomes grey level ``k / (num_classes - 1)`` in all three channels: binary masks are black/white,
    multi-class masks evenly spaced greys. Grey keeps it colour-neutral and monotone, so decoding is a rounding
    (:func:`rgb_to_mask`) and neighbouring ids stay neighbouring levels.
    """
    _check_ids(mask_ids, num_classes)
    grey = mask_ids.float().div(num_classes - 1)
    return grey.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def rgb_to_mask(rgb: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse of :func:`mask_to_rgb` for generated masks: the nearest grey level of the channel mean -> ``long``."""
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise InputError("rgb", "a [N, 3, H, W] tensor", got=f"shape {tuple(rgb.shape)}")
    if num_classes < 2:
        raise InputError("num_classes", "at least 2", got=str(num_classes))
    levels = rgb.float().mean(dim=1).clamp(0.0, 1.0) * (num_classes - 1)
    return levels.round().long()


def one_hot(mask_ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids ``[N, H, W]`` -> ``float32 [N, num_classes, H, W]`` (for losses and metrics)."""
    _check_ids(mask_ids, num_classes)
    return torch.nn.functional.one_hot(mask_ids.long(), num_classes).permute(0, 3, 1, 2).float()
