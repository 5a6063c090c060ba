"""The encoded training set kept across runs: encoding every pair through the frozen autoencoder is done once per
dataset and setting, not once per run (a 30-step stage-1 run on 1000 Kvasir-SEG pairs spent 483 s encoding and 15 s
training on a loaded 2-core CPU).

Entries live in ``<cache>/latents/<key>.safetensors`` (+ ``.json``), ``<cache>`` being ``$ALIGNFLOW_CACHE_DIR`` or the
platform cache. The key is a sha256 over what decides the latents: the bytes of every image and mask file in order
(with their stems), the training resolution and the autoencoder (the generator kind, its pretrained VAE for sd3, the
number of mask classes, which sets the mask colours). Change a pixel, a file, the order, the resolution or the
autoencoder and the key changes; renaming the dataset folder or copying it elsewhere does not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from alignflow.atomic import atomic_write_json
from alignflow.environment import cache_root
from alignflow.runs.checkpoint import load_tensors, save_tensors

VERSION = 1  # bump when the encoding itself changes (what load_pairs or the codec compute)
CHUNK = 1 << 20


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(pairs: Sequence[Any], resolution: int, codec: dict[str, Any]) -> str:
    """sha256 of the pairs' file contents (``pair.stem``, ``pair.image``, ``pair.mask``) and the encoding settings."""
    digest = hashlib.sha256(json.dumps({"version": VERSION, "resolution": resolution, "codec": codec}, sort_keys=True).encode())
    for pair in pairs:
        digest.update(f"{pair.stem}\0{_file_digest(pair.image)}\0{_file_digest(pair.mask)}\n".encode())
    return digest.hexdigest()


def cache_folder() -> Path:
    return cache_root() / "latents"


def load_cached(key: str) -> dict[str, torch.Tensor] | None:
    """The tensors stored under ``key``, or None (never stored, or an entry that cannot be read any more)."""
    path = cache_folder() / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        return load_tensors(path)
    except (OSError, ValueError, RuntimeError):  # a damaged entry is encoded again, not an error of the run
        return None


def store(key: str, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> Path:
    """Keep ``tensors`` under ``key`` (written atomically, so a concurrent reader never sees half an entry)."""
    path = cache_folder() / f"{key}.safetensors"
    save_tensors(tensors, path)
    atomic_write_json(path.with_suffix(".json"), info)
    return path
