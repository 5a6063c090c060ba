"""Reading, writing, resizing and tensor conversion of images and class-id masks.

Every user-facing problem (a missing, unreadable or ill-formed file) raises :class:`alignflow.errors.InputError`
naming the file, so the GUI and the CLI can show one actionable line instead of a traceback.

Conventions used by the whole engine:

* an *image* is ``uint8`` ``H x W x 3`` RGB;
* a *mask* is ``uint8`` ``H x W`` of class ids ``0..K-1`` (binary masks stored as 0/255 become 0/1);
* a *tensor image* is ``float32`` ``3 x H x W`` (or ``N x 3 x H x W``) in ``[0, 1]``.

Masks must be stored losslessly (PNG or TIFF). JPEG compression invents intermediate values along the edges;
silently thresholding them would hide a broken dataset, so such masks are rejected with the offending values
listed (a JPEG mask whose values happen to be exactly {0, 255} is accepted).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from alignflow.atomic import atomic_open
from alignflow.errors import InputError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
MAX_CLASS_ID = 254  # 255 is reserved for the "foreground" of binary 0/255 masks
_LIST_AT_MOST = 5  # unexpected mask values quoted in an error message

# Pillow modes whose pixels are numbers wider than 8 bits; they go through the same rescaling as TIFF arrays.
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


# --------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------


def is_image_file(path: Path) -> bool:
    """True for a visible file with a supported suffix (hidden files such as macOS ``._x.png`` are skipped)."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _is_tiff(path: Path) -> bool:
    return Path(path).suffix.lower() in TIFF_SUFFIXES


def _read_raw(path: Path, palette_as_indices: bool = False) -> np.ndarray:
    """Decode a file to an array without interpreting it; TIFF via tifffile, which reads headers Pillow rejects.

    Palette PNGs give their colours, or with ``palette_as_indices`` their indices (VOC-style masks store ids so).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "an existing image file", got="no such file")
    try:
        if _is_tiff(path):
            return np.asarray(tifffile.imread(path))
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here and not later
            return _pil_to_array(im, palette_as_indices)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable file" to the user
        raise InputError(path, "a readable PNG, JPEG or TIFF file", got=f"{type(exc).__name__}: {exc}") from exc


def _pil_to_array(im: Image.Image, palette_as_indices: bool) -> np.ndarray:
    """Pillow image to array, keeping wide values as numbers (rescaled later, not clipped by a mode conversion)."""
    if im.mode == "P" and not palette_as_indices:
        return np.array(im.convert("RGBA" if "transparency" in im.info else "RGB"))
    if im.mode in _WIDE_MODES or im.mode in ("L", "P", "RGB", "RGBA", "LA"):
        return np.array(im)  # a writable copy (asarray of a Pillow image is read-only)
    if im.mode == "1":
        return np.array(im.convert("L"))
    return np.array(im.convert("RGB"))  # CMYK, YCbCr, LAB, ...


def _channels_last(array: np.ndarray) -> np.ndarray:
    """Move a leading channel axis (planar TIFFs store 3 x H x W) to the end; leave H x W x C alone."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        return np.moveaxis(array, 0, -1)
    return array


def _to_uint8_range(array: np.ndarray) -> np.ndarray:
    """Rescale any numeric image to uint8 so that 8-, 10-, 12- and 16-bit or float data all look alike.

    Integers: divided by the full scale of the smallest bit depth (8, 10, 12, 14, 16, 32) that holds the maximum,
    which keeps brightness comparable between images of one scanner (no per-image stretching).
    Floats: [0, 1] is scaled by 255, [0, 255] kept, anything else min-max stretched.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        array = np.clip(array, 0, None)
        top = int(array.max(initial=0))
        bits = next((b for b in (8, 10, 12, 14, 16, 32) if top < 2**b), 64)
        scaled = array.astype(np.float64) * (255.0 / (2**bits - 1))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    array = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
    if low >= 0.0 and high <= 1.0:
        array = array * 255.0
    elif low < 0.0 or high > 255.0:
        array = (array - low) * (255.0 / max(high - low, 1e-12))
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _to_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    """H x W, H x W x 1/2/3/4 -> H x W x 3: grey is repeated, alpha dropped."""
    array = _channels_last(array)
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (1, 2):  # grey or grey + alpha
        return np.repeat(array[:, :, :1], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[:, :, :3])
    raise InputError(path, "a 2-D grey or RGB(A) image", got=f"an array of shape {array.shape}")


def read_image(path: Path | str) -> np.ndarray:
    """Read an image file as ``uint8`` ``H x W x 3`` RGB (grey repeated, alpha dropped, wide data rescaled)."""
    path = Path(path)
    raw = _read_raw(path)
    return _to_rgb(_to_uint8_range(raw), path)


def _single_channel(array: np.ndarray, path: Path) -> np.ndarray:
    """Reduce a mask to H x W; an RGB(A) mask is accepted only if its colour channels are identical."""
    array = _channels_last(array)
    if array.ndim == 3 and array.shape[2] in (1, 2):
        return array[:, :, 0]
    if array.ndim == 3 and array.shape[2] in (3, 4):
        rgb = array[:, :, :3]
        if not (np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2])):
            raise InputError(
                path,
                "a single-channel mask of class ids (or an RGB mask with identical channels)",
                got="a coloured RGB mask; convert colours to class ids 0, 1, 2, ... first",
            )
        return rgb[:, :, 0]
    if array.ndim != 2:
        raise InputError(path, "a 2-D single-channel mask", got=f"an array of shape {array.shape}")
    return array


def unique_values(array: np.ndarray) -> np.ndarray:
    """Sorted distinct values; bincount for uint8 is several times faster than np.unique on a scan of 1000 masks."""
    if array.dtype == np.uint8:
        return np.flatnonzero(np.bincount(array.ravel(), minlength=256)).astype(np.uint8)
    return np.unique(array)


def quote_values(values: Sequence[float] | np.ndarray) -> str:
    """``{0, 128, 255}``: at most a few values, then how many more."""
    shown = [f"{v:g}" if isinstance(v, float) else str(v) for v in list(values)[:_LIST_AT_MOST]]
    more = len(values) - len(shown)
    return "{" + ", ".join(shown) + (f", ... ({more} more)" if more > 0 else "") + "}"


def _values_error(path: Path, unexpected: Sequence, all_values: np.ndarray) -> InputError:
    hint = ""
    if path.suffix.lower() in (".jpg", ".jpeg"):
        hint = " (JPEG compression adds such values: store masks losslessly, e.g. as PNG)"
    got = f"unexpected values {quote_values(unexpected)} among {len(all_values)} distinct values{hint}"
    return InputError(path, "mask values {0, 255} (binary) or integer class ids 0..254", got=got)


def mask_values_to_ids(array: np.ndarray, path: Path | str = "mask") -> np.ndarray:
    """Map raw single-channel mask values to ``uint8`` class ids, or raise naming the unexpected values.

    {0, 255} (or a subset) is binary and becomes {0, 1}; integers 0..254 are class ids as they are. Anything else
    (non-integer floats, negatives, {0, 128, 255}) is ambiguous and rejected rather than guessed.
    """
    path = Path(path)
    values = unique_values(array)
    if array.dtype.kind == "f":
        fractional = values[~np.isfinite(values) | (values != np.round(values))]
        if fractional.size:
            raise _values_error(path, [float(v) for v in fractional], values)
    ints = values.astype(np.int64) if values.size else np.zeros(0, np.int64)
    if set(ints.tolist()) <= {0, 255}:
        return (np.asarray(array) == 255).astype(np.uint8)
    if ints.min() >= 0 and ints.max() <= MAX_CLASS_ID:
        return np.asarray(array).astype(np.uint8)
    if ints.max() == 255:  # most likely a binary mask with extra grey levels (JPEG, anti-aliasing)
        unexpected = [int(v) for v in ints if v not in (0, 255)]
    else:
        unexpected = [int(v) for v in ints if v < 0 or v > MAX_CLASS_ID]
    raise _values_error(path, unexpected, values)


def read_mask(path: Path | str) -> np.ndarray:
    """Read a mask file as ``uint8`` ``H x W`` class ids (see :func:`mask_values_to_ids` for the accepted values)."""
    return read_mask_and_stored_values(path)[0]


def read_mask_and_stored_values(path: Path | str) -> tuple[np.ndarray, tuple[int, ...]]:
    """A mask's class ids and the distinct values stored in its file (0/255 and 0/1 both give ids 0/1; a dataset
    scan compares the stored values of all masks to tell a binary dataset from a multi-class one)."""
    path = Path(path)
    raw = _single_channel(_read_raw(path, palette_as_indices=True), path)
    if raw.dtype == bool:
        ids = raw.astype(np.uint8)
        return ids, tuple(int(v) for v in unique_values(ids))
    ids = mask_values_to_ids(raw, path)
    return ids, tuple(int(v) for v in unique_values(raw))


def read_size(path: Path | str) -> tuple[int, int]:
    """``(height, width)`` from the file header without decoding the pixels (PNG chunks are CRC-checked).

    Used by the dataset scan, which must stay fast on thousands of files yet catch truncated files.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "an existing image file", got="no such file")
    try:
        if _is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                shape = _channels_last(np.empty(tif.pages[0].shape, dtype=np.uint8)).shape
            return int(shape[0]), int(shape[1])
        with Image.open(path) as im:
            width, height = im.size
            im.verify()  # walks the PNG chunks and checks their CRCs: a truncated file fails here
        return height, width
    except Exception as exc:  # noqa: BLE001
        raise InputError(path, "a readable PNG, JPEG or TIFF file", got=f"{type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------------------------


def _images_in_folder(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def list_images(path: Path | str | Sequence[Path | str]) -> list[Path]:
    """Image files of a folder (sorted, not recursive) or an explicit list of files (kept in the given order)."""
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
        if path.is_dir():
            found = _images_in_folder(path)
            if not found:
                raise InputError(path, f"a folder with images ({', '.join(IMAGE_SUFFIXES)})", got="none")
            return found
        return _check_files([path])
    files = [Path(p) for p in path]
    if not files:
        raise InputError("images", "at least one image file", got="an empty list")
    return _check_files(files)


def _check_files(files: list[Path]) -> list[Path]:
    for file in files:
        if not file.exists():
            raise InputError(file, "an existing image file or folder", got="no such file or folder")
        if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(file, f"an image file ({', '.join(IMAGE_SUFFIXES)})", got=file.suffix or "no suffix")
    return files


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def _atomic_save_png(path: Path, pil_image: Image.Image) -> None:
    """Save to a temporary file in the target folder, then rename: readers never see a half-written PNG."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(path, "a file name ending in .png", got=path.suffix or "no suffix")
    with atomic_open(path) as handle:
        pil_image.save(handle, format="PNG")


def write_image(path: Path | str, array: np.ndarray) -> None:
    """Write a ``uint8`` ``H x W x 3`` (or ``H x W`` grey) image as PNG, atomically."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise InputError("array", "a uint8 H x W x 3 or H x W image", got=f"{array.dtype} of shape {array.shape}")
    _atomic_save_png(Path(path), Image.fromarray(np.ascontiguousarray(array)))


def write_mask(path: Path | str, class_ids: np.ndarray, binary_as_255: bool = True) -> None:
    """Write class ids as a single-channel PNG, atomically; binary masks as 0/255 so they are visible in viewers.

    Ids must be 0..254 so the file reads back to the same ids with :func:`read_mask`.
    """
    ids = np.asarray(class_ids)
    if ids.ndim != 2 or not (np.issubdtype(ids.dtype, np.integer) or ids.dtype == bool):
        raise InputError("class_ids", "an integer H x W array", got=f"{ids.dtype} of shape {ids.shape}")
    low, high = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if low < 0 or high > MAX_CLASS_ID:
        raise InputError("class_ids", f"class ids in 0..{MAX_CLASS_ID}", got=f"values {low}..{high}")
    out = ids.astype(np.uint8)
    if binary_as_255 and high <= 1:
        out = out * np.uint8(255)
    _atomic_save_png(Path(path), Image.fromarray(out, mode="L"))


# --------------------------------------------------------------------------------------------------------------
# Resizing
# --------------------------------------------------------------------------------------------------------------


def _check_size(size: int, name: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(name, "a positive integer number of pixels", got=repr(size))
    return int(size)


def _resize_array(array: np.ndarray, height: int, width: int, resample: Image.Resampling) -> np.ndarray:
    """Resize H x W or H x W x C with Pillow (whose BICUBIC filter widens its support when shrinking: antialiased).

    uint8 grey/RGB go through Pillow directly; other dtypes channel by channel in float mode ``F``.
    """
    if array.shape[:2] == (height, width):
        return array.copy()
    if array.dtype == np.uint8 and (array.ndim == 2 or array.shape[2] == 3):
        return np.array(Image.fromarray(np.ascontiguousarray(array)).resize((width, height), resample))
    channels = array[:, :, None] if array.ndim == 2 else array
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(channels[:, :, c], dtype=np.float32), mode="F").resize(
            (width, height), resample
        ))
        for c in range(channels.shape[2])
    ]
    out = np.stack(planes, axis=2)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    out = out.astype(array.dtype)
    return out[:, :, 0] if array.ndim == 2 else out


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an image to ``size x size`` with antialiased bicubic filtering (aspect ratio is not kept)."""
    size = _check_size(size)
    return _resize_array(np.asarray(image), size, size, Image.Resampling.BICUBIC)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize class ids to ``size x size`` with nearest neighbour, so no new (in-between) ids appear."""
    size = _check_size(size)
    return _resize_array(np.asarray(mask), size, size, Image.Resampling.NEAREST)


def resize_to(array: np.ndarray, shape: tuple[int, int], kind: str = "auto") -> np.ndarray:
    """Resize back to an original ``(height, width)``, e.g. a generated mask or image for export.

    ``kind="auto"`` treats a 2-D integer array as a mask (nearest) and anything else as an image (bicubic);
    pass ``"mask"`` or ``"image"`` where that guess is wrong (e.g. a 2-D grey image).
    """
    array = np.asarray(array)
    height, width = (_check_size(shape[0], "shape"), _check_size(shape[1], "shape"))
    if kind not in ("auto", "mask", "image"):
        raise InputError("kind", "'auto', 'mask' or 'image'", got=repr(kind))
    is_mask = kind == "mask" or (
        kind == "auto" and array.ndim == 2 and (np.issubdtype(array.dtype, np.integer) or array.dtype == bool)
    )
    if array.dtype == bool:
        array = array.astype(np.uint8)
    resample = Image.Resampling.NEAREST if is_mask else Image.Resampling.BICUBIC
    return _resize_array(array, height, width, resample)


# --------------------------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------------------------


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``uint8`` ``H x W x 3`` -> ``float32`` ``3 x H x W`` in ``[0, 1]`` (the range the VAE and rewards expect)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError("image", "a uint8 H x W x 3 array", got=f"{image.dtype} of shape {image.shape}")
    if not image.flags.writeable:  # torch warns on read-only buffers; the copy is freed right after .float()
        image = image.copy()
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` or ``[N, 3, H, W]`` in ``[0, 1]`` -> ``uint8`` ``H x W x 3`` / ``N x H x W x 3`` (clamped, rounded)."""
    if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
        raise InputError("tensor", "a [3, H, W] or [N, 3, H, W] tensor", got=f"shape {tuple(tensor.shape)}")
    scaled = tensor.detach().to("cpu", torch.float32).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return scaled.movedim(-3, -1).contiguous().numpy()
