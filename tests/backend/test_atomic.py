"""Atomic writes: all or nothing, and the permissions a plain write would give (not tempfile's private 0600/0700)."""

import os
import stat

import pytest

from alignflow.atomic import atomic_directory, atomic_open, atomic_write_json


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_results_get_the_permissions_of_a_plain_write(tmp_path):
    plain_file, plain_dir = tmp_path / "plain.txt", tmp_path / "plain"
    plain_file.write_text("x")
    plain_dir.mkdir()
    atomic_write_json(tmp_path / "a.json", {"a": 1})
    with atomic_directory(tmp_path / "folder") as tmp:
        (tmp / "inside.txt").write_text("y")
    assert mode(tmp_path / "a.json") == mode(plain_file)
    assert mode(tmp_path / "folder") == mode(plain_dir)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"new, half written")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]
