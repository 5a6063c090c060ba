"""Image-quality metrics on real polyp images: zero for identical sets, larger for shifted ones, known SSIM/PSNR
cases, shift-tolerant LPIPS equal to the authors' implementation, and the end-to-end report and t-SNE map."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alignflow.cli import main
from alignflow.errors import InputError
from alignflow.metrics.image_quality import (
    ImageSet,
    evaluate_images,
    format_report,
    frechet_inception_distance,
    kernel_inception_distance,
    load_image_set,
    paired_scores,
    reward_features,
)
from alignflow.metrics.kid import inception_features
from alignflow.metrics.lpips import ShiftTolerantLPIPS
from alignflow.models.feature_encoders import build_feature_encoder
from alignflow.rewards import mmd_unbiased

COUNT = 24
SIZE = 128


def colour_shifted(images: torch.Tensor) -> torch.Tensor:
    """A scanner-like shift of uint8 images: red damped, blue lifted."""
    shifted = images.float()
    shifted[:, 0] *= 0.6
    shifted[:, 2] = shifted[:, 2] * 0.8 + 50
    return shifted.clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def clinic(clinicdb) -> ImageSet:
    return load_image_set(clinicdb, "target", SIZE, limit=2 * COUNT)


@pytest.fixture(scope="module")
def halves(clinic) -> dict[str, torch.Tensor]:
    """Interleaved halves of evenly spaced CVC-ClinicDB frames: two samples of one distribution."""
    return {"a": clinic.images[0::2], "b": clinic.images[1::2], "b_shifted": colour_shifted(clinic.images[1::2])}


@pytest.fixture(scope="module")
def inception(halves) -> dict[str, torch.Tensor]:
    return {name: inception_features(images) for name, images in halves.items()}


def test_fid_and_kid_near_zero_for_one_distribution_and_large_for_a_colour_shift(inception):
    a, b, shifted = inception["a"], inception["b"], inception["b_shifted"]
    assert abs(frechet_inception_distance(a, a)) < 1e-3
    # A set against itself: the unbiased KID is slightly negative (each image meets itself only in the cross term).
    kid_self, _, subset = kernel_inception_distance(a, a)
    assert -0.05 < kid_self <= 0 and subset == COUNT
    kid_same, _, _ = kernel_inception_distance(b, a)
    fid_same = frechet_inception_distance(b, a)
    fid_shift = frechet_inception_distance(shifted, a)
    kid_shift, _, _ = kernel_inception_distance(shifted, a)
    print(f"same domain: FID {fid_same:.1f}, KID {kid_same:.4f}; colour shift: FID {fid_shift:.1f}, KID {kid_shift:.4f}")
    assert abs(kid_same) < 0.01 and kid_shift > 0.02 and kid_shift > 5 * abs(kid_same)
    assert fid_shift > fid_same + 20


def test_kid_is_reproducible_for_a_seed(inception):
    first = kernel_inception_distance(inception["b_shifted"], inception["a"], subset_size=8, seed=3)
    assert first == kernel_inception_distance(inception["b_shifted"], inception["a"], subset_size=8, seed=3)
    with pytest.raises(InputError, match="subset_size"):
        kernel_inception_distance(inception["b_shifted"], inception["a"], subset_size=COUNT + 1)


def test_reward_mmd_near_zero_for_one_distribution_and_larger_for_a_shift(halves):
    encoder = build_feature_encoder()
    features = {name: reward_features(images, encoder) for name, images in halves.items()}
    same = float(mmd_unbiased(features["b"], features["a"]))
    moved = float(mmd_unbiased(features["b_shifted"], features["a"]))
    print(f"reward MMD same domain {same:.4f}, colour shift {moved:.4f}")
    assert moved > 0.02 and abs(same) < 0.2 * moved


def _as_set(images: torch.Tensor, stems: list[str], name: str) -> ImageSet:
    return ImageSet(name, Path(name), stems, images)


def test_ssim_psnr_lpips_known_cases(clinic):
    stems = clinic.stems[:4]
    real = _as_set(clinic.images[:4], stems, "real")
    identical = paired_scores(_as_set(clinic.images[:4].clone(), stems, "generated"), real)
    assert identical["pairs"] == 4 and identical["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert identical["psnr_db"] is None  # infinite: reported as null, JSON has no infinity
    assert identical["lpips_shift_tolerant"] == pytest.approx(0.0, abs=1e-7)
    # Darkening by 26 grey levels where that cannot clip: MSE = (26/255)^2, so PSNR = 20 log10(255/26).
    darker = clinic.images[:4].clone()
    brightish = darker >= 26
    darker[brightish] -= 26
    offset = paired_scores(_as_set(darker, stems, "generated"), real)
    expected = 10 * math.log10(1 / (brightish.float().mean() * (26 / 255) ** 2))
    assert offset["psnr_db"] == pytest.approx(expected, abs=0.05) and offset["ssim"] < 0.999
    others = _as_set(clinic.images[4:8], stems, "generated")
    assert paired_scores(others, real)["lpips_shift_tolerant"] > 3 * offset["lpips_shift_tolerant"]
    # Unmatched stems give no pairs rather than comparing unrelated images.
    assert paired_scores(_as_set(clinic.images[:4], ["a", "b", "c", "d"], "generated"), real)["pairs"] == 0


def test_shift_tolerant_lpips_matches_the_authors_implementation(kvasir, clinicdb):
    """Values from stlpips-pytorch 0.0.2 (LPIPS(net="alex", variant="shift_tolerant"), normalize=True), run once with
    torchvision stubbed out, on these exact inputs: the first four images of each set, Pillow-resized to 128."""
    def load(folder: Path) -> torch.Tensor:
        files = sorted((folder / "images").iterdir())[:4]
        return torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((128, 128)))).permute(2, 0, 1)
                            for f in files]).float() / 255

    kvasir_images, clinic_images = load(kvasir), load(clinicdb)
    lpips = ShiftTolerantLPIPS()
    with torch.no_grad():
        distances = lpips(kvasir_images, clinic_images)
        shifted = lpips(kvasir_images, kvasir_images.roll(1, dims=-1))
    assert distances.tolist() == pytest.approx([0.50819707, 0.6771222, 0.47947764, 0.49696422], abs=1e-5)
    assert float(shifted.max()) < 0.02  # a one-pixel shift barely moves it: the point of the shift-tolerant variant


def test_lpips_rejects_mismatched_pairs():
    with pytest.raises(InputError, match="same shape"):
        ShiftTolerantLPIPS()(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 48))


@pytest.mark.slow
def test_evaluate_images_writes_report_and_map(tmp_path, kvasir, clinicdb):
    """Kvasir-SEG as the 'generated' set: it sits farther from CVC-ClinicDB than another CVC-ClinicDB subset does."""
    report = evaluate_images(kvasir, clinicdb, tmp_path / "eval", source=kvasir, size=SIZE, limit=12)
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["generated_to_target"] == pytest.approx(report["generated_to_target"])
    assert report["paired"]["pairs"] == 12 and report["paired"]["ssim"] == pytest.approx(1.0, abs=1e-6)
    png = Image.open(tmp_path / "eval" / "embedding.png")
    assert png.format == "PNG" and min(png.size) > 300
    assert "generated -> target" in format_report(report)
    same_domain = evaluate_images(clinicdb, clinicdb, tmp_path / "floor", size=SIZE, limit=12)
    assert same_domain["generated_to_target"]["fid"] < 1e-2
    assert report["generated_to_target"]["kid"] > 0.02 and report["generated_to_target"]["mmd_reward"] > 0.05


def test_cli_bad_folder_is_one_line_naming_it(tmp_path, clinicdb, capsys):
    code = main(["evaluate-images", "--generated", str(tmp_path / "missing"), "--target", str(clinicdb),
                 "--out", str(tmp_path / "eval"), "--device", "cpu"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "missing" in line and line.startswith("alignflow evaluate-images: error:")
    assert not (tmp_path / "eval").exists()


def test_impossible_kid_subset_is_refused_before_feature_extraction(tmp_path, kvasir, clinicdb, capsys):
    code = main(["evaluate-images", "--generated", str(kvasir), "--target", str(clinicdb), "--limit", "4",
                 "--kid-subset-size", "10", "--out", str(tmp_path / "eval"), "--device", "cpu"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "subset_size" in line and "4" in line
    with pytest.raises(InputError, match="--size"):
        evaluate_images(kvasir, clinicdb, tmp_path / "eval", size=16)
