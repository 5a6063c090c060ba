"""The reference advisor end to end on real images: features equal to the reward's, the cache, outputs, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from alignflow.advisor import advise_references, extract_features
from alignflow.advisor.features import cache_folder, content_hash
from alignflow.cli import main
from alignflow.data import list_images, load_reference_images
from alignflow.errors import InputError
from alignflow.models.feature_encoders import build_feature_encoder
from alignflow.rewards import AlignmentReward

RESOLUTION = 64  # small and fast; the advisor takes any generator resolution
CLINIC_FRAMES = [1, 40, 90, 130, 180, 230, 280, 330, 380, 430, 480, 530, 580]  # spread over the video's sequences


@pytest.fixture(scope="module")
def encoder():
    return build_feature_encoder("efficientnet-lite0")


@pytest.fixture(scope="module")
def target(tmp_path_factory, clinicdb, shared_data) -> Path:
    """13 CVC-ClinicDB frames (256 x 192) and one Drishti-GS fundus image (256 x 256): mixed sizes, one stranger."""
    folder = tmp_path_factory.mktemp("target")
    for frame in CLINIC_FRAMES:
        shutil.copy(clinicdb / "images" / f"{frame}.png", folder / f"{frame}.png")
    fundus = sorted((shared_data / "Drishti-GS_roi" / "images").iterdir())[0]
    shutil.copy(fundus, folder / "fundus.png")
    return folder


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory, target, encoder) -> Path:
    """A feature cache holding the target folder, filled once with the shared encoder."""
    cache = tmp_path_factory.mktemp("cache")
    extract_features(list_images(target), resolution=RESOLUTION, build_encoder=lambda: encoder, cache_dir=cache)
    return cache


def counting(encoder, calls: list[int]):
    """The real encoder, with a forward hook that counts its calls."""
    encoder._forward_hooks.clear()
    encoder.register_forward_hook(lambda module, inputs, output: calls.append(len(output)))
    return lambda: encoder


def test_features_are_the_rewards_reference_features(target, encoder, tmp_path):
    files = list_images(target)[:5]
    reward = AlignmentReward(encoder, load_reference_images(files, RESOLUTION))
    features = extract_features(files, resolution=RESOLUTION, build_encoder=lambda: encoder, cache_dir=tmp_path)
    assert torch.allclose(features.values, reward.reference_features, atol=1e-5)


def test_second_call_reads_the_cache_and_never_runs_the_encoder(target, encoder, tmp_path):
    files = list_images(target)[:4]
    calls: list[int] = []
    first = extract_features(files, resolution=RESOLUTION, build_encoder=counting(encoder, calls), cache_dir=tmp_path)
    assert (first.computed, first.cached, sum(calls)) == (4, 0, 4)
    stored = cache_folder("efficientnet-lite0", RESOLUTION, tmp_path) / content_hash(files[0])[:2] / f"{content_hash(files[0])}.safetensors"
    assert torch.equal(load_file(str(stored))["features"], first.values[0])

    calls.clear()
    built: list[int] = []
    second = extract_features(files, resolution=RESOLUTION, build_encoder=lambda: built.append(1) or encoder, cache_dir=tmp_path)
    assert (second.computed, second.cached, sum(calls), built) == (0, 4, 0, [])
    assert torch.equal(second.values, first.values)

    edited = tmp_path / "edited.png"  # same name elsewhere, different content: a cache miss for that one only
    shutil.copy(files[1], edited)
    with open(edited, "ab") as handle:
        handle.write(b"\0")  # trailing bytes change the hash, not the pixels
    third = extract_features([files[0], edited], resolution=RESOLUTION, build_encoder=counting(encoder, calls), cache_dir=tmp_path)
    assert (third.computed, third.cached, sum(calls)) == (1, 1, 1)
    encoder._forward_hooks.clear()


def test_advice_on_real_images_with_a_planted_fundus_image(target, warm_cache, tmp_path):
    out = tmp_path / "advice"
    advice = advise_references(target, 3, out=out, resolution=RESOLUTION, cache_dir=warm_cache, draws=50, splits=40, seed=1)
    assert advice.settings["features_computed"] == 0  # all from the warm cache
    assert len({p["index"] for p in advice.picks}) == 3 and "fundus.png" not in [p["name"] for p in advice.picks]
    assert advice.outliers[0]["name"] == "fundus.png" and advice.outliers[0]["outlier"]
    assert [point.k for point in advice.curve] == [1, 2, 3, 5, 10]
    assert advice.chosen_mmd[2] < advice.curve[2].random.median  # the picks beat random triples

    report = json.loads((out / "advice.json").read_text())
    assert report["references"] == advice.references == json.loads((out / "references.json").read_text())
    assert (out / "references.txt").read_text().split() == advice.references
    assert all(Path(p).is_file() for p in report["references"])
    for name in ("k_curve.png", "picks_and_outliers.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = advise_references(target, 3, resolution=RESOLUTION, cache_dir=warm_cache, draws=50, splits=40, seed=1)
    assert again.picks == advice.picks and again.curve == advice.curve and again.noise_floor == advice.noise_floor
    other_seed = advise_references(target, 3, resolution=RESOLUTION, cache_dir=warm_cache, draws=50, splits=40, seed=2)
    assert other_seed.picks == advice.picks and other_seed.noise_floor != advice.noise_floor  # herding has no randomness


def test_verdict_for_the_same_folder_and_for_arrays(target, warm_cache, encoder):
    same = advise_references(target, 2, source=target, resolution=RESOLUTION, cache_dir=warm_cache, splits=40)
    assert same.shift.verdict == "within noise"
    arrays = [np.asarray(torch.rand(3, 50, 70).mul(255).byte().permute(1, 2, 0)) for _ in range(4)]
    noise = advise_references(target, 2, source=arrays, resolution=RESOLUTION, cache_dir=warm_cache, splits=40)
    assert noise.shift.verdict == "large shift" and noise.source["count"] == 4


@pytest.mark.parametrize(
    ("k", "match"),
    [(0, "--k: expected a number of references of at least 1"), (15, "--k: expected at most 14, the number of images in")],
)
def test_bad_k(target, warm_cache, k, match):
    with pytest.raises(InputError, match=match):
        advise_references(target, k, resolution=RESOLUTION, cache_dir=warm_cache)


def test_cli_errors_name_the_folder_or_file(target, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["advise-references", str(empty), "--out", str(tmp_path / "o")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars
    assert str(empty) in line and "a folder with images" in line

    broken = tmp_path / "broken"
    shutil.copytree(target, broken)
    (broken / "truncated.png").write_bytes((target / "1.png").read_bytes()[:300])
    assert main(["advise-references", str(broken), "--no-cache", "--out", str(tmp_path / "o")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("alignflow advise-references: error: ") and "truncated.png" in line and "readable" in line

    assert main(["advise-references", str(target), "--k", "99", "--out", str(tmp_path / "o")]) == 2
    assert "--k" in capsys.readouterr().err


def test_cli_prints_a_summary(target, warm_cache, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copytree(warm_cache, tmp_path / "cache" / "advisor-features")
    out = tmp_path / "advice"
    code = main(["advise-references", str(target), "--k", "4", "--resolution", str(RESOLUTION), "--out", str(out),
                 "--splits", "30", "--draws", "30", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0 and "advised references (k = 4)" in printed and "fundus.png (z" in printed
    assert "14 from the cache, 0 computed" in printed
    assert len(json.loads((out / "references.json").read_text())) == 4
