"""Reward features of target images, exactly as stage 2 computes its reference features, cached by file content.

Preprocessing follows the reward: ``load_reference_images`` (read, square-resize antialiased bicubic to the
generator's resolution, [0, 1]) and then the frozen feature encoder in fp32, without autocast, as
``AlignmentReward`` does for its references. So the advisor's MMD is the MMD the stage-2 reward will see.

The cache holds one safetensors file per image under ``<cache>/advisor-features/v1/<encoder>-<resolution>/``,
named by the sha256 of the image file's bytes (or of a raw array's bytes), so renamed or copied files hit it and an
edited file misses it. ``<cache>`` is :func:`alignflow.data.cache_root` (``$ALIGNFLOW_CACHE_DIR`` when set).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from alignflow.data import cache_root, list_images, load_reference_images, resize_image, to_tensor
from alignflow.errors import InputError
from alignflow.models.feature_encoders import DEFAULT_ENCODER, build_feature_encoder
from alignflow.progress import ProgressCallback
from alignflow.runs.checkpoint import load_tensors, save_tensors

CACHE_VERSION = "v1"  # bump when the preprocessing changes, so stale features are never reused
ENCODER_BATCH = 16  # AlignmentReward's batch size for reference features
Image = Path | str | np.ndarray


@dataclass
class Features:
    """Reward features ``[N, D]`` of N images (float32, CPU) and how many came from the cache."""

    values: torch.Tensor
    names: list[str]
    cached: int
    computed: int


def image_files(folder_or_files: Path | str | Sequence[Path | str]) -> list[Path]:
    """Images of a folder, of a dataset folder's ``images/``, or an explicit list of files."""
    if isinstance(folder_or_files, (str, Path)) and (Path(folder_or_files) / "images").is_dir():
        return list_images(Path(folder_or_files) / "images")
    return list_images(folder_or_files)


def content_hash(image: Image) -> str:
    """sha256 of a file's bytes, or of an array's shape, dtype and bytes."""
    digest = hashlib.sha256()
    if isinstance(image, np.ndarray):
        digest.update(f"{image.shape}{image.dtype}".encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        return digest.hexdigest()
    try:
        with open(image, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:
        raise InputError(image, "a readable image file", f"{type(error).__name__}: {error.strerror}") from None
    return digest.hexdigest()


def cache_folder(encoder_name: str, resolution: int, root: Path | str | None = None) -> Path:
    """One folder per encoder and resolution: a feature is only valid for the preprocessing that produced it."""
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", encoder_name)[-40:]
    tag = hashlib.sha256(encoder_name.encode()).hexdigest()[:8]  # dino:<path> names may collide once shortened
    base = Path(root) if root is not None else cache_root() / "advisor-features"
    return base / CACHE_VERSION / f"{readable}-{tag}-{resolution}px"


def _read_cached(path: Path, dim: int | None) -> torch.Tensor | None:
    """A cached feature vector, or None when absent or unusable (it is then recomputed and overwritten)."""
    if not path.is_file():
        return None
    try:
        vector = load_tensors(path)["features"]
    except (InputError, KeyError):
        return None
    if vector.ndim != 1 or (dim is not None and vector.shape[0] != dim) or not torch.isfinite(vector).all():
        return None
    return vector


def _load_images(images: Sequence[Image], resolution: int) -> torch.Tensor:
    """The reward's reference preprocessing; arrays (napari layers) must already be uint8 H x W x 3."""
    if all(not isinstance(image, np.ndarray) for image in images):
        return load_reference_images(list(images), resolution)
    return torch.stack([
        to_tensor(resize_image(image, resolution)) if isinstance(image, np.ndarray) else load_reference_images([image], resolution)[0]
        for image in images
    ])


def extract_features(
    images: Sequence[Image],
    *,
    resolution: int = 128,
    encoder_name: str = DEFAULT_ENCODER,
    device: torch.device | str = "cpu",
    build_encoder: Callable[[], nn.Module] | None = None,
    cache_dir: Path | str | None = None,
    use_cache: bool = True,
    names: Sequence[str] | None = None,
    on_progress: ProgressCallback | None = None,
) -> Features:
    """Reward features of image files or uint8 RGB arrays; cached ones are read, the encoder runs only on the rest.

    The encoder is built only when some image is not cached, by ``build_encoder`` if given (e.g. one shared by
    several calls) or else from ``encoder_name``. ``names`` labels the images (default: their paths).
    """
    if len(images) == 0:
        raise InputError("images", "at least one image", "none")
    labels = list(names) if names is not None else [f"image {i}" if isinstance(im, np.ndarray) else str(im) for i, im in enumerate(images)]
    progress = on_progress or (lambda stage, done, total: None)
    folder = cache_folder(encoder_name, resolution, cache_dir)
    keys = [content_hash(image) if use_cache else "" for image in images]
    vectors: list[torch.Tensor | None] = [None] * len(images)
    dim = None
    if use_cache:
        for i, key in enumerate(keys):
            vectors[i] = _read_cached(folder / key[:2] / f"{key}.safetensors", dim)
            dim = dim or (vectors[i].shape[0] if vectors[i] is not None else None)
    missing = [i for i, vector in enumerate(vectors) if vector is None]
    cached = len(images) - len(missing)
    progress("features", cached, len(images))
    if missing:
        encoder = build_encoder() if build_encoder is not None else build_feature_encoder(encoder_name, device)
        run_on = next(encoder.parameters()).device
        for start in range(0, len(missing), ENCODER_BATCH):
            batch = missing[start : start + ENCODER_BATCH]
            pixels = _load_images([images[i] for i in batch], resolution)
            with torch.no_grad():
                computed = encoder(pixels.to(run_on)).float().cpu()
            for i, vector in zip(batch, computed):
                vectors[i] = vector.clone()
                if use_cache:
                    save_tensors({"features": vectors[i]}, folder / keys[i][:2] / f"{keys[i]}.safetensors")
            progress("features", cached + start + len(batch), len(images))
    return Features(torch.stack(vectors), labels, cached=cached, computed=len(missing))  # type: ignore[arg-type]
