"""Evaluator / reward segmenter training runs, photometric augmentation, and the fidelity in augment's report."""

import json

import pytest
import torch

from alignflow.cli import main
from alignflow.data import load_pairs, scan_dataset
from alignflow.errors import InputError
from alignflow.fidelity.photometric import augment_photometric, photometric_transform
from alignflow.fidelity.segmenter import load_segmenter
from alignflow.fidelity.training import EvaluatorTrainConfig, source_half_indices

TINY_GENERATOR = {"resolution": 32, "num_layers": 2, "controlnet_layers": 1, "attention_head_dim": 8,
                  "num_attention_heads": 2, "context_tokens": 2, "patch_size": 1}


def test_reward_and_evaluator_halves_are_disjoint_and_fixed():
    first, second = source_half_indices(901, "first"), source_half_indices(901, "second")
    assert not set(first) & set(second) and sorted(first + second) == list(range(901))
    assert source_half_indices(901, "first") == first and len(source_half_indices(901, "all")) == 901
    assert EvaluatorTrainConfig(role="reward").half == "first" and EvaluatorTrainConfig().half == "second"


def test_photometric_augmentation_changes_colours_only(kvasir_eight):
    images, _ = load_pairs(scan_dataset(kvasir_eight), 64, indices=range(4))
    augmented = augment_photometric(photometric_transform(seed=0), images)
    assert augmented.shape == images.shape and augmented.min() >= 0 and augmented.max() <= 1
    assert (augmented - images).abs().mean() > 0.02
    again = augment_photometric(photometric_transform(seed=0), images)
    assert torch.equal(augmented, again)  # seeded


def test_runs_record_role_kind_and_data(tmp_path, kvasir_eight, clinicdb, make_pairs):
    make_pairs(clinicdb, tmp_path / "pool", 4)
    common = ["--source", str(kvasir_eight), "--steps", "2", "--batch-size", "2", "--resolution", "32", "--device", "cpu"]
    assert main(["train-evaluator", "--out", str(tmp_path / "bench"), "--target", str(tmp_path / "pool"), *common]) == 0
    assert main(["train-evaluator", "--out", str(tmp_path / "reward"), "--role", "reward", *common]) == 0
    bench, reward = load_segmenter(tmp_path / "bench"), load_segmenter(tmp_path / "reward")
    assert (bench.kind, bench.config.architecture, bench.info["photometric"]) == ("benchmark", "unet", False)
    assert (reward.kind, reward.config.architecture, reward.info["photometric"]) == ("reward", "basic-unet", True)
    assert bench.info["source_pairs"] == reward.info["source_pairs"] == 4 and bench.info["pairs"] == 8
    assert not set(bench.info["training_images"]) & set(reward.info["training_images"])
    # Resuming a finished run returns its segmenter without training again.
    assert main(["train-evaluator", "--out", str(tmp_path / "reward"), "--role", "reward", "--resume", *common]) == 0
    assert json.loads((tmp_path / "reward" / "summary.json").read_text())["steps"] == 2


def test_bad_options_are_named(tmp_path, kvasir_eight, capsys):
    with pytest.raises(InputError, match="role"):
        EvaluatorTrainConfig(source="x", out="y", role="judge").validate()
    code = main(["train-evaluator", "--source", str(kvasir_eight), "--out", str(tmp_path / "r"), "--resolution", "40", "--device", "cpu"])
    assert code == 2 and "segmenter.resolution" in capsys.readouterr().err


@pytest.mark.slow
def test_augment_and_evaluate_images_report_mask_fidelity(tmp_path, kvasir_eight, clinicdb, evaluator, capsys):
    references = tmp_path / "refs"
    references.mkdir()
    for image in sorted((clinicdb / "images").glob("*.png"))[:3]:
        (references / image.name).symlink_to(image)
    config = tmp_path / "augment.json"
    config.write_text(json.dumps({"generator": TINY_GENERATOR, "train": {"checkpoint_every": 50, "preview_every": 50}}))
    out = tmp_path / "job"
    assert main(["augment", "--config", str(config), "--source", str(kvasir_eight), "--references", str(references),
                 "--num-references", "3", "--out", str(out), "--resolution", "32", "--stage1-steps", "2", "--stage2-steps", "1",
                 "--batch-size", "2", "--sample-steps", "2", "--num-generated", "4", "--device", "cpu",
                 "--export-format", "folders", "--evaluator", str(evaluator)]) == 0
    assert "mask fidelity (source-only evaluator" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    for name in ("stage1", "aligned"):
        fidelity = report["models"][name]["mask_fidelity"]
        assert fidelity["count"] == 4 and fidelity["ceiling"]["count"] == 4 and fidelity["evaluator_kind"] == "source-only"
        rows = json.loads((out / "synthetic" / name / "manifest.json").read_text())
        assert sum(row["fidelity_dice"] for row in rows) / 4 == pytest.approx(fidelity["dice"])
    assert main(["evaluate-images", "--generated", str(out / "synthetic" / "aligned"), "--target", str(references),
                 "--out", str(tmp_path / "eval"), "--size", "64", "--evaluator", str(evaluator), "--masks", str(kvasir_eight),
                 "--device", "cpu"]) == 0
    assert "mask fidelity" in capsys.readouterr().out
    evaluated = json.loads((tmp_path / "eval" / "report.json").read_text())["mask_fidelity"]
    assert evaluated["count"] == 4 and evaluated["ceiling"]["count"] == 8
