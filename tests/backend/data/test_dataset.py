"""Dataset scanning on the real data, loading to tensors, and one error listing every problem of a broken folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from alignflow.data import load_pairs, mask_to_rgb, one_hot, rgb_to_mask, scan_dataset, split_indices
from alignflow.errors import InputError


def test_scan_real_polyp_datasets(kvasir: Path, clinicdb: Path) -> None:
    folder = scan_dataset(kvasir)
    assert len(folder.pairs) == 1000 and folder.num_classes == 2 and folder.class_values == (0, 1)
    clinic = scan_dataset(clinicdb)
    assert len(clinic.pairs) == 612 and clinic.num_classes == 2
    assert all(p.image.stem == p.mask.stem == p.stem for p in clinic.pairs)


def test_scan_and_load_multiclass(shared_data: Path) -> None:
    folder = scan_dataset(shared_data / "Drishti-GS_roi")
    assert folder.class_values == (0, 1, 2) and folder.num_classes == 3
    images, masks = load_pairs(folder, 48, indices=[0, 5, 7])
    assert images.shape == (3, 3, 48, 48) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert masks.shape == (3, 48, 48) and masks.dtype == torch.long
    assert set(masks.unique().tolist()) <= {0, 1, 2} and 2 in masks.unique().tolist()


def test_load_pairs_non_square_binary(kvasir: Path) -> None:
    folder = scan_dataset(kvasir, check_masks=False)
    images, masks = load_pairs(folder, 64, indices=range(4))
    assert images.shape == (4, 3, 64, 64) and masks.shape == (4, 64, 64)
    assert set(masks.unique().tolist()) == {0, 1}
    with pytest.raises(InputError, match="indices"):
        load_pairs(folder, 64, indices=[5000])


def test_missing_masks_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="masks"):
        scan_dataset(tmp_path)


def test_every_problem_is_reported_at_once(tmp_path: Path, kvasir: Path, make_pairs) -> None:
    names = make_pairs(kvasir, tmp_path, 6)
    (tmp_path / "masks" / names[0]).unlink()  # image without mask
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / names[1])  # wrong size
    shape = np.asarray(Image.open(tmp_path / "images" / names[2])).shape[:2]
    grey = np.zeros(shape, np.uint8)
    grey[:5], grey[5:10] = 128, 255
    Image.fromarray(grey).save(tmp_path / "masks" / names[2])  # values {0, 128, 255}
    (tmp_path / "masks" / names[3]).unlink()
    tifffile.imwrite(tmp_path / "masks" / (Path(names[3]).stem + ".tif"), np.full(shape, 0.5, np.float32))
    image = tmp_path / "images" / names[4]
    image.write_bytes(image.read_bytes()[:200])  # truncated PNG
    shutil.copy(tmp_path / "images" / names[5], tmp_path / "images" / (Path(names[5]).stem + ".jpg"))  # duplicate
    shutil.copy(tmp_path / "masks" / names[5], tmp_path / "masks" / "orphan.png")  # mask without image

    with pytest.raises(InputError) as err:
        scan_dataset(tmp_path)
    message = str(err.value)
    assert message.startswith(str(tmp_path))  # ``where`` is the first offending file
    assert "7 problem(s)" in message
    for expected in (names[0], names[1], "128", Path(names[3]).stem + ".tif", "0.5", names[4], "orphan.png"):
        assert expected in message
    assert "duplicate stem" in message
    assert len(err.value.problems) == 7


@pytest.mark.parametrize("breakage", ["no_mask", "size", "values", "float", "truncated"])
def test_single_problem_names_the_file(tmp_path: Path, kvasir: Path, breakage: str, make_pairs) -> None:
    names = make_pairs(kvasir, tmp_path, 2)
    victim = tmp_path / "masks" / names[1]
    shape = np.asarray(Image.open(victim)).shape
    if breakage == "no_mask":
        victim.unlink()
    elif breakage == "size":
        Image.fromarray(np.zeros((shape[0] + 1, shape[1]), np.uint8)).save(victim)
    elif breakage == "values":
        Image.fromarray(np.tile(np.array([0, 128, 255], np.uint8), (shape[0], shape[1] // 3))).save(victim)
    elif breakage == "float":
        victim.unlink()
        victim = victim.with_suffix(".tiff")
        tifffile.imwrite(victim, np.full(shape, 0.3, np.float32))
    else:
        victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(InputError) as err:
        scan_dataset(tmp_path)
    assert err.value.where.endswith(victim.name if breakage != "no_mask" else names[1])
    assert "1 problem(s)" in str(err.value)


def test_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(InputError, match="images"):
        scan_dataset(tmp_path)


def test_split_indices() -> None:
    held, rest = split_indices(1000, [100], seed=3)
    assert len(held) == 100 and len(rest) == 900
    assert not set(held) & set(rest) and set(held) | set(rest) == set(range(1000))
    assert all(np.array_equal(a, b) for a, b in zip(split_indices(1000, [100], seed=3), (held, rest)))
    train, val = split_indices(10, [0.8, 0.2], seed=0)
    assert len(train) == 8 and len(val) == 2
    with pytest.raises(InputError, match="fractions_or_counts"):
        split_indices(10, [11], seed=0)
    with pytest.raises(InputError, match="fractions_or_counts"):
        split_indices(10, [1, 0.5], seed=0)


def test_mask_renderings() -> None:
    ids = torch.tensor([[[0, 1], [2, 1]]])
    rgb = mask_to_rgb(ids, 3)
    assert rgb.shape == (1, 3, 2, 2)
    assert rgb[0, :, 0, 1].tolist() == [0.5, 0.5, 0.5] and rgb[0, 0, 1, 0] == 1.0
    assert torch.equal(rgb_to_mask(rgb + 0.1 * (torch.rand_like(rgb) - 0.5), 3), ids)
    assert torch.equal(mask_to_rgb(ids.clamp(max=1), 2)[0, 1], ids.clamp(max=1)[0].float())
    hot = one_hot(ids, 3)
    assert hot.shape == (1, 3, 2, 2) and torch.equal(hot.argmax(1), ids)
    with pytest.raises(InputError, match="mask_ids"):
        mask_to_rgb(ids, 2)
