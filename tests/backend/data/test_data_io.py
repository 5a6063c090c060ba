"""Image/mask reading, writing, resizing and tensor conversion, on real files and tiny hand-made broken ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from alignflow.data import (
    list_images,
    read_image,
    read_mask,
    read_size,
    resize_image,
    resize_mask,
    resize_to,
    to_tensor,
    to_uint8,
    write_image,
    write_mask,
)
from alignflow.errors import InputError


def test_read_real_image_and_mask(kvasir: Path) -> None:
    image_path = sorted((kvasir / "images").iterdir())[0]
    image = read_image(image_path)
    mask = read_mask(kvasir / "masks" / image_path.name)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
    assert set(np.unique(mask)) == {0, 1}  # stored as 0/255
    assert read_size(image_path) == image.shape[:2]


def test_read_image_grey_alpha_and_wide_tiffs(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert np.array_equal(read_image(tmp_path / "grey.png"), np.repeat(grey[:, :, None], 3, 2))

    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png").shape == (3, 4, 3)
    assert read_image(tmp_path / "rgba.png")[0, 0].tolist() == [200, 0, 0]

    wide = np.full((5, 6, 3), 65535, np.uint16)
    tifffile.imwrite(tmp_path / "wide.tif", wide)
    assert read_image(tmp_path / "wide.tif").max() == 255

    planar = np.zeros((3, 5, 6), np.float32)
    planar[1] = 1.0
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    out = read_image(tmp_path / "planar.tif")
    assert out.shape == (5, 6, 3) and out[0, 0].tolist() == [0, 255, 0]


def test_read_mask_accepts_class_ids_and_grey_rgb(tmp_path: Path) -> None:
    ids = np.array([[0, 1], [2, 2]], np.uint8)
    Image.fromarray(ids).save(tmp_path / "ids.png")
    assert np.array_equal(read_mask(tmp_path / "ids.png"), ids)

    grey_rgb = np.repeat((ids == 2).astype(np.uint8)[:, :, None] * 255, 3, 2)
    Image.fromarray(grey_rgb).save(tmp_path / "rgb.png")
    assert np.array_equal(read_mask(tmp_path / "rgb.png"), (ids == 2).astype(np.uint8))

    tifffile.imwrite(tmp_path / "float_ids.tif", ids.astype(np.float32))
    assert np.array_equal(read_mask(tmp_path / "float_ids.tif"), ids)


@pytest.mark.parametrize(
    ("name", "array", "quoted"),
    [
        ("grey_levels.png", np.array([[0, 128], [255, 255]], np.uint8), "128"),
        ("soft.tif", np.array([[0.0, 0.5], [1.0, 0.25]], np.float32), "0.5"),
        ("coloured.png", np.array([[[255, 0, 0], [0, 0, 0]]], np.uint8), "coloured"),
    ],
)
def test_read_mask_rejects_ambiguous_values(tmp_path: Path, name: str, array: np.ndarray, quoted: str) -> None:
    path = tmp_path / name
    tifffile.imwrite(path, array) if name.endswith(".tif") else Image.fromarray(array).save(path)
    with pytest.raises(InputError) as err:
        read_mask(path)
    assert name in str(err.value) and quoted in str(err.value)


def test_jpeg_mask_with_compression_noise_is_rejected_with_a_hint(tmp_path: Path) -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 20:40] = 255
    Image.fromarray(mask).save(tmp_path / "noisy.jpg", quality=75)
    with pytest.raises(InputError, match=r"noisy\.jpg.*PNG"):
        read_mask(tmp_path / "noisy.jpg")


def test_truncated_png_names_the_file(tmp_path: Path, kvasir: Path) -> None:
    source = sorted((kvasir / "images").iterdir())[0]
    broken = tmp_path / "broken.png"
    broken.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    for reader in (read_image, read_mask, read_size):
        with pytest.raises(InputError, match="broken.png"):
            reader(broken)
    with pytest.raises(InputError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_list_images(tmp_path: Path) -> None:
    for name in ("b.png", "a.jpg", "c.TIF", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.png", "c.TIF"]
    assert list_images([tmp_path / "b.png"]) == [tmp_path / "b.png"]
    with pytest.raises(InputError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    with pytest.raises(InputError, match="notes.txt"):
        list_images([tmp_path / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        list_images(tmp_path / "empty")


def test_atomic_writes_round_trip_and_leave_no_temp_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    write_image(tmp_path / "out" / "image.png", image)
    assert np.array_equal(read_image(tmp_path / "out" / "image.png"), image)

    binary = (rng.random((9, 7)) > 0.5).astype(np.uint8)
    write_mask(tmp_path / "out" / "binary.png", binary)
    assert set(np.unique(np.asarray(Image.open(tmp_path / "out" / "binary.png")))) == {0, 255}
    assert np.array_equal(read_mask(tmp_path / "out" / "binary.png"), binary)

    multi = rng.integers(0, 3, (9, 7)).astype(np.uint8)
    write_mask(tmp_path / "out" / "multi.png", multi)
    assert np.array_equal(read_mask(tmp_path / "out" / "multi.png"), multi)

    with pytest.raises(InputError, match="class_ids"):
        write_mask(tmp_path / "out" / "bad.png", np.full((2, 2), 300))
    with pytest.raises(InputError, match="bad.jpg"):
        write_image(tmp_path / "out" / "bad.jpg", image)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["binary.png", "image.png", "multi.png"]


def test_resizing_keeps_class_ids_and_goes_back(kvasir: Path) -> None:
    stem = sorted((kvasir / "images").iterdir())[3].name
    image, mask = read_image(kvasir / "images" / stem), read_mask(kvasir / "masks" / stem)
    small_image, small_mask = resize_image(image, 64), resize_mask(mask * 2, 64)
    assert small_image.shape == (64, 64, 3) and small_mask.shape == (64, 64)
    assert set(np.unique(small_mask)) <= {0, 2}
    back = resize_to(small_mask, mask.shape)
    assert back.shape == mask.shape and set(np.unique(back)) <= {0, 2}
    assert resize_to(small_image, mask.shape).shape == (*mask.shape, 3)
    with pytest.raises(InputError, match="size"):
        resize_image(image, 0)


def test_tensor_round_trip() -> None:
    image = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    tensor = to_tensor(image)
    assert tensor.shape == (3, 5, 6) and tensor.dtype == torch.float32
    assert 0.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0
    assert np.array_equal(to_uint8(tensor), image)
    assert to_uint8(torch.stack([tensor, tensor])).shape == (2, 5, 6, 3)


def test_palette_png_is_colour_as_image_and_indices_as_mask(tmp_path: Path) -> None:
    indices = np.array([[0, 1], [2, 1]], np.uint8)
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    palette.save(tmp_path / "voc.png")
    assert read_image(tmp_path / "voc.png")[0, 1].tolist() == [255, 0, 0]
    assert np.array_equal(read_mask(tmp_path / "voc.png"), indices)
