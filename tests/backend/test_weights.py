"""The weights registry: the override folder is used and checked, and names are validated."""

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from alignflow import weights
from alignflow.errors import InputError


def test_registry_entries_are_pinned():
    assert set(weights.REGISTRY) == {"taef2_encoder", "taef2_decoder", "stlpips_alex_shift_tolerant"}
    for filename, url, sha256 in weights.REGISTRY.values():
        assert url.startswith("https://github.com/") and url.endswith(".pth") and len(sha256) == 64
        assert filename.endswith(".pth")


def test_override_folder_is_used_and_matches_the_registry():
    folder = Path(os.environ[weights.WEIGHTS_DIR_ENV])  # set by tests/conftest.py to ../shared/weights
    path = weights.weight_path("taef2_encoder")
    assert path == folder / "taef2_encoder.pth"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == weights.REGISTRY["taef2_encoder"].sha256
    state = weights.load_state_dict("taef2_decoder")
    assert state and all(key.split(".")[0].isdigit() for key in state)


def test_corrupted_file_names_the_file_and_the_expected_sha256(tmp_path, monkeypatch):
    shutil.copy(weights.weight_path("taef2_decoder"), tmp_path / "taef2_decoder.pth")
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path))
    assert weights.weight_path("taef2_decoder") == tmp_path / "taef2_decoder.pth"  # a good copy passes
    data = bytearray((tmp_path / "taef2_decoder.pth").read_bytes())
    data[-100] ^= 0xFF  # one flipped byte, same size
    (tmp_path / "taef2_decoder.pth").write_bytes(bytes(data))
    stat = (tmp_path / "taef2_decoder.pth").stat()  # the digest cache keys on mtime, whose clock can be coarse
    os.utime(tmp_path / "taef2_decoder.pth", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    expected = weights.REGISTRY["taef2_decoder"].sha256
    with pytest.raises(InputError, match=f"taef2_decoder.pth.*{expected}"):
        weights.weight_path("taef2_decoder")


def test_missing_file_in_the_override_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path))
    with pytest.raises(InputError, match="taef2_encoder.pth"):
        weights.weight_path("taef2_encoder")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(InputError, match="one of .*taef2_encoder"):
        weights.weight_path("sd-vae")


def test_efficientnet_weights_come_from_the_installed_package():
    path = weights.efficientnet_lite0_weights_path()
    assert path.name == "efficientnet-lite0-57934424.pth" and path.stat().st_size == 18_826_032


def test_without_override_pooch_gets_the_pinned_hash(tmp_path, monkeypatch):
    import pooch

    calls = []
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV)
    monkeypatch.setenv(weights.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(pooch, "retrieve", lambda url, **kw: calls.append((url, kw)) or str(tmp_path / kw["fname"]))
    assert weights.weight_path("stlpips_alex_shift_tolerant") == tmp_path / "stlpips_alex_shift_tolerant.pth"
    (url, kw), = calls
    entry = weights.REGISTRY["stlpips_alex_shift_tolerant"]
    assert url == entry.url and kw["known_hash"] == f"sha256:{entry.sha256}" and Path(kw["path"]) == tmp_path


def test_nothing_downloads_or_loads_at_import():
    import subprocess
    import sys

    code = ("import sys, alignflow.cli, alignflow.weights, alignflow.models.autoencoder; "
            "print('pooch' in sys.modules, 'efficientnet_lite_pytorch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
