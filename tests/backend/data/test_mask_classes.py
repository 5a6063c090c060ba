"""Mask values against the dataset's classes (issue 18): one file cannot tell a stray value from a class, the set
can. A binary set with one 0/128 mask, or one 0..7 mask, is refused naming the file and its values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignflow.cli import main
from alignflow.data import read_mask, scan_dataset
from alignflow.errors import InputError
from alignflow.export import export_dataset


def _rewrite(mask_path: Path, values: np.ndarray) -> None:
    Image.fromarray(values.astype(np.uint8)).save(mask_path)


def _binary_set(root: Path, kvasir: Path, make_pairs) -> list[Path]:
    make_pairs(kvasir, root, 4)  # Kvasir-SEG masks are 0/255
    return sorted((root / "masks").iterdir())


def test_a_stray_0_128_mask_in_a_binary_set_is_named_with_its_values(tmp_path, kvasir, make_pairs):
    masks = _binary_set(tmp_path / "d", kvasir, make_pairs)
    _rewrite(masks[1], np.where(read_mask(masks[1]) > 0, 128, 0))
    with pytest.raises(InputError) as error:
        scan_dataset(tmp_path / "d")
    message = str(error.value)
    assert masks[1].name in message and "{0, 128}" in message and "binary" in message and "\n" not in message
    assert "1 problem(s)" in message  # only the stray mask is blamed


def test_a_0_to_7_mask_in_a_binary_set_is_named(tmp_path, kvasir, make_pairs, capsys):
    masks = _binary_set(tmp_path / "d", kvasir, make_pairs)
    shape = read_mask(masks[2]).shape
    _rewrite(masks[2], np.arange(shape[0] * shape[1]).reshape(shape) % 8)
    code = main(["train", "--source", str(tmp_path / "d"), "--out", str(tmp_path / "run"), "--steps", "1", "--device", "cpu"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and masks[2].name in line and "{0, 1, 2, 3, 4, ... (3 more)}" in line, line
    with pytest.raises(InputError, match=masks[2].name):
        export_dataset(tmp_path / "out", real=tmp_path / "d", export_format="folders")
    assert not (tmp_path / "out").exists()


def test_a_0_128_mask_among_class_id_masks_is_a_gap_not_129_classes(tmp_path, kvasir, make_pairs):
    masks = _binary_set(tmp_path / "d", kvasir, make_pairs)
    for mask in masks:  # the same set stored as class ids 0/1 ...
        _rewrite(mask, read_mask(mask))
    _rewrite(masks[3], read_mask(masks[3]) * 128)  # ... and one mask stored 0/128
    with pytest.raises(InputError) as error:
        scan_dataset(tmp_path / "d")
    assert masks[3].name in str(error.value) and "{0, 128}" in str(error.value)


def test_real_multi_class_sets_and_a_missing_class_still_pass(tmp_path, shared_data, make_pairs):
    drishti = scan_dataset(shared_data / "Drishti-GS_roi")  # disc and cup: 0/1/2
    assert drishti.class_values == (0, 1, 2)
    make_pairs(shared_data / "Drishti-GS_roi", tmp_path / "cup", 3)
    for mask in (tmp_path / "cup" / "masks").iterdir():  # the cup only: ids {0, 2}, one unused id
        _rewrite(mask, np.where(read_mask(mask) == 1, 0, read_mask(mask)))
    assert scan_dataset(tmp_path / "cup").class_values == (0, 2)
