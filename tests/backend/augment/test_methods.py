"""The cheap augmentation methods on real Kvasir-SEG pairs and CVC-ClinicDB references: FDA against a direct numpy
computation, histogram matching through scikit-image, photometric augmentation, and the pairs each one writes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from alignflow.augment.methods import (
    fda_pairs,
    fourier_domain_adaptation,
    histogram_matching,
    histogram_pairs,
    photometric,
    photometric_pairs,
    reference_for,
    transform_pairs,
)
from alignflow.data import read_image, read_mask, resize_to, scan_dataset, to_tensor
from alignflow.errors import InputError


@pytest.fixture(scope="module")
def kvasir_four(tmp_path_factory, kvasir, make_pairs) -> Path:
    root = tmp_path_factory.mktemp("kvasir4")
    make_pairs(kvasir, root, 4)
    return root


@pytest.fixture(scope="module")
def references(tmp_path_factory, clinicdb) -> Path:
    root = tmp_path_factory.mktemp("refs")
    for image in sorted((clinicdb / "images").glob("*.png"))[100:103]:
        shutil.copy(image, root / image.name)
    return root


def fda_numpy(source: np.ndarray, reference: np.ndarray, beta: float) -> np.ndarray:
    """FDA written as the authors' training code writes it (utils/__init__.py, low_freq_mutate): the b x b corners of
    the unshifted amplitude spectrum, i.e. frequencies -b .. b-1, take the reference's values. [C, H, W] floats."""
    spectrum, reference_spectrum = np.fft.fft2(source, axes=(-2, -1)), np.fft.fft2(reference, axes=(-2, -1))
    amplitude, phase = np.abs(spectrum), np.angle(spectrum)
    target = np.abs(reference_spectrum)
    h, w = source.shape[-2:]
    b = int(np.floor(min(h, w) * beta))
    for rows in (slice(0, b), slice(h - b, h)):
        for cols in (slice(0, b), slice(w - b, w)):
            amplitude[:, rows, cols] = target[:, rows, cols]
    return np.clip(np.real(np.fft.ifft2(amplitude * np.exp(1j * phase), axes=(-2, -1))), 0.0, 1.0)


def real_images(kvasir_four: Path, references: Path, crop: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A Kvasir image cropped to ``crop`` and a ClinicDB reference resized to it, [3, H, W] in [0, 1]."""
    source = read_image(sorted((kvasir_four / "images").iterdir())[0])[: crop[0], : crop[1]]
    reference = resize_to(read_image(sorted(references.iterdir())[0]), crop, kind="image")
    return to_tensor(source), to_tensor(reference)


@pytest.mark.parametrize("crop", [(200, 240), (201, 215)])  # even and odd sides: the centred window lines up
@pytest.mark.parametrize("beta", [0.01, 0.05, 0.09])
def test_fda_equals_a_direct_numpy_computation(kvasir_four, references, crop, beta):
    source, reference = real_images(kvasir_four, references, crop)
    ours = fourier_domain_adaptation(source, reference, beta)
    expected = fda_numpy(source.double().numpy(), reference.double().numpy(), beta)
    assert ours.shape == source.shape
    assert np.abs(ours.double().numpy() - expected).max() < 1e-5
    assert (ours - source).abs().mean() > 1e-3  # it did change the image


def test_fda_takes_the_references_mean_colour_and_beta_zero_returns_the_input(kvasir_four, references):
    source, reference = real_images(kvasir_four, references, (200, 240))
    assert torch.allclose(fourier_domain_adaptation(source, reference, 0.0), source, atol=1e-6)
    # the zero frequency is inside every window with b >= 1: each channel's mean becomes the reference's (up to
    # the clamp to [0, 1])
    moved = fourier_domain_adaptation(source, reference, 0.01)
    before = (source.mean(dim=(1, 2)) - reference.mean(dim=(1, 2))).abs()
    after = (moved.mean(dim=(1, 2)) - reference.mean(dim=(1, 2))).abs()
    assert float(before.max()) > 0.1 and float(after.max()) < 0.25 * float(before.max())


def test_fda_checks_beta_and_shapes(kvasir_four, references):
    source, reference = real_images(kvasir_four, references, (64, 64))
    with pytest.raises(InputError, match="--fda-beta"):
        fourier_domain_adaptation(source, reference, 0.6)
    with pytest.raises(InputError, match="reference"):
        fourier_domain_adaptation(source, reference[:, :32], 0.05)


def test_histogram_matching_gives_each_channel_the_references_histogram(kvasir_four, references):
    from skimage.exposure import match_histograms

    source = to_tensor(read_image(sorted((kvasir_four / "images").iterdir())[1]))
    reference = to_tensor(read_image(sorted(references.iterdir())[1]))  # another size: histograms need no resizing
    matched = histogram_matching(source, reference)
    assert matched.shape == source.shape
    direct = match_histograms(source.permute(1, 2, 0).numpy(), reference.permute(1, 2, 0).numpy(), channel_axis=-1)
    assert np.allclose(matched.permute(1, 2, 0).numpy(), direct, atol=1e-6)
    quantiles = torch.tensor([0.1, 0.5, 0.9])
    for channel in range(3):
        ours = torch.quantile(matched[channel].flatten(), quantiles)
        theirs = torch.quantile(reference[channel].flatten(), quantiles)
        assert torch.allclose(ours, theirs, atol=2 / 255), channel


def test_photometric_is_seeded_and_changes_the_look(kvasir_four):
    source = to_tensor(read_image(sorted((kvasir_four / "images").iterdir())[0]))
    a, again, other = photometric(source, 3), photometric(source, 3), photometric(source, 4)
    assert torch.equal(a, again) and not torch.equal(a, other)
    assert 0 <= float(a.min()) and float(a.max()) <= 1 and (a - source).abs().mean() > 0.01


def test_fda_pairs_write_the_generate_layout_with_method_and_reference_in_the_manifest(tmp_path, kvasir_four, references):
    pairs = scan_dataset(kvasir_four).pairs
    written = fda_pairs(pairs, references, tmp_path / "fda", beta=0.05, seed=7, resolution=64)
    assert written.images.shape == (4, 3, 64, 64) and written.seeds == [7, 8, 9, 10]
    rows = json.loads((tmp_path / "fda" / "manifest.json").read_text())
    available = sorted(str(p) for p in references.iterdir())
    for row, pair in zip(rows, pairs):
        assert row["method"] == "fda" and row["beta"] == 0.05 and row["synthetic"] is True
        assert row["source_image"] == str(pair.image) and row["source_mask"] == str(pair.mask)
        assert row["reference"] == available[reference_for(row["seed"], 3)] and sorted(row["references"]) == available
        image = read_image(tmp_path / "fda" / "images" / f"{pair.stem}.png")
        assert image.shape == read_image(pair.image).shape  # at the original size: no resizing
        assert np.array_equal(read_mask(tmp_path / "fda" / "masks" / f"{pair.stem}.png"), read_mask(pair.mask))  # exact label
    # any row is made again alone from its seed and reference
    last = rows[-1]
    again = transform_pairs("fda", [pairs[-1]], tmp_path / "again", references=[Path(last["reference"])],
                            seed=last["seed"], resolution=64)
    name = f"{pairs[-1].stem}.png"
    assert np.array_equal(read_image(tmp_path / "again" / "images" / name), read_image(tmp_path / "fda" / "images" / name))
    assert torch.equal(again.images[0], written.images[-1])


def test_histogram_and_photometric_pairs(tmp_path, kvasir_four, references):
    pairs = scan_dataset(kvasir_four).pairs[:2]
    matched = histogram_pairs(pairs, references, tmp_path / "histogram", seed=0, resolution=32)
    augmented = photometric_pairs(pairs, tmp_path / "photometric", seed=0, resolution=32)
    assert matched.images.shape == augmented.images.shape == (2, 3, 32, 32)
    rows = json.loads((tmp_path / "photometric" / "manifest.json").read_text())
    assert [row["method"] for row in rows] == ["photometric"] * 2 and all(row["reference"] is None for row in rows)
    assert json.loads((tmp_path / "histogram" / "manifest.json").read_text())[0]["method"] == "histogram"


def test_bad_input_names_the_flag(tmp_path, kvasir_four, references):
    pairs = scan_dataset(kvasir_four).pairs[:1]
    with pytest.raises(InputError, match="--references"):
        fda_pairs(pairs, [], tmp_path / "a")
    with pytest.raises(InputError, match="--references"):
        histogram_pairs(pairs, tmp_path / "missing", tmp_path / "a")
    with pytest.raises(InputError, match="--method"):
        transform_pairs("sharpen", pairs, tmp_path / "a")
    with pytest.raises(InputError, match="--fda-beta"):
        fda_pairs(pairs, references, tmp_path / "a", beta=-0.1)
    assert not (tmp_path / "a").exists()


def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path, kvasir_four):
    pairs = scan_dataset(kvasir_four).pairs[:1]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="overwrite"):
        photometric_pairs(pairs, tmp_path / "out", resolution=16)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    photometric_pairs(pairs, tmp_path / "out", resolution=16, overwrite=True)
    assert not (tmp_path / "out" / "notes.txt").exists() and len(list((tmp_path / "out" / "images").iterdir())) == 1
    with pytest.raises(InputError, match="--out"):  # never a folder holding the inputs
        photometric_pairs(pairs, kvasir_four, resolution=16, overwrite=True)
