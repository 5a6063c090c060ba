"""The paired comparison (real only against real + synthetic over several seeds) on a few real Kvasir-SEG pairs."""

import json
import math

import pytest

from alignflow.cli import main
from alignflow.downstream import DownstreamConfig, compare_with_synthetic, evaluate_segmentation
from alignflow.downstream.compare import COMPARISON_FILE, describe_gain
from alignflow.errors import InputError

SMALL_UNET = {"channels": [8, 16, 32, 64], "num_res_units": 1}


def tiny(out, train, test_folder, **values) -> DownstreamConfig:
    """test_evaluate.py's tiny run (backend test folders are not packages, so it cannot be imported from there)."""
    defaults = dict(train=str(train), test={"kvasir": str(test_folder)}, out=str(out), model="unet", model_options=dict(SMALL_UNET),
                    steps=6, batch_size=4, resolution=32, device="cpu", seed=3, log_every=1, checkpoint_every=100, preview_every=100,
                    warmup_steps=2, ema_decay=0.9, paired_batches=True)
    return DownstreamConfig.from_dict({**defaults, **values})


def test_each_seed_trains_both_arms_and_the_gain_is_their_paired_difference(tmp_path, kvasir_train, kvasir_test, synthetic_pairs):
    config = tiny(tmp_path / "cmp", kvasir_train, kvasir_test, synthetic=str(synthetic_pairs), synthetic_share=0.5)
    events = []
    comparison = compare_with_synthetic(config, runs=2, listeners=[events.append])
    assert comparison["seeds"] == [3, 4]
    assert json.loads((tmp_path / "cmp" / COMPARISON_FILE).read_text()) == json.loads(json.dumps(comparison))
    block = comparison["test"]["kvasir"]
    real, mixed = block["real_only"]["per_seed"], block["with_synthetic"]["per_seed"]
    differences = [m - r for m, r in zip(mixed, real)]
    assert block["gain"] == pytest.approx(sum(differences) / 2)
    assert block["gain_sd"] == pytest.approx(abs(differences[0] - differences[1]) / math.sqrt(2))
    assert block["gain_se"] == pytest.approx(block["gain_sd"] / math.sqrt(2)) and block["count"] == 4
    # The real-only arm is the same config without the synthetic pairs: run alone with that seed it scores the same.
    alone = evaluate_segmentation(tiny(tmp_path / "alone", kvasir_train, kvasir_test, seed=4))
    assert alone["test"]["kvasir"]["dice"] == pytest.approx(real[1], abs=1e-6)
    splits = {arm: json.loads((tmp_path / "cmp" / "seed3" / arm / "splits.json").read_text()) for arm in ("real_only", "with_synthetic")}
    assert not splits["real_only"]["synthetic"] and len(splits["with_synthetic"]["synthetic"]) == 4
    assert {event["run"] for event in events} == {0, 1, 2, 3} and {event["runs"] for event in events} == {4}
    # Asked again, every finished run is returned as it is (nothing trains again, nothing is lost).
    stamp = (tmp_path / "cmp" / "seed4" / "with_synthetic" / "results.json").stat().st_mtime_ns
    assert compare_with_synthetic(config, runs=2)["test"] == comparison["test"]
    assert (tmp_path / "cmp" / "seed4" / "with_synthetic" / "results.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(("runs", "synthetic", "named"), [(1, True, "--paired-runs"), (2.5, True, "--paired-runs"), (3, False, "--synthetic")])
def test_bad_input_is_named_before_anything_trains(tmp_path, kvasir_train, kvasir_test, synthetic_pairs, runs, synthetic, named):
    values = dict(synthetic=str(synthetic_pairs), synthetic_share=0.5) if synthetic else {}
    with pytest.raises(InputError, match=named):
        compare_with_synthetic(tiny(tmp_path / "bad", kvasir_train, kvasir_test, **values), runs=runs)
    assert not (tmp_path / "bad").exists()


def test_cli_paired_runs(tmp_path, kvasir_train, kvasir_test, synthetic_pairs, capsys):
    flags = ["evaluate-segmentation", "--train", str(kvasir_train), "--test", f"kvasir={kvasir_test}", "--synthetic", str(synthetic_pairs),
             "--synthetic-share", "0.5", "--paired-batches", "--steps", "4", "--batch-size", "4", "--resolution", "32", "--device", "cpu"]
    assert main([*flags, "--paired-runs", "1", "--out", str(tmp_path / "one")]) != 0
    assert "--paired-runs" in capsys.readouterr().err
    assert main([*flags, "--paired-runs", "2", "--out", str(tmp_path / "two")]) == 0
    printed = capsys.readouterr().out
    assert "kvasir (4 images, 2 paired runs)" in printed and "gain" in printed and (tmp_path / "two" / COMPARISON_FILE).is_file()


def test_the_verdict_needs_two_standard_errors():
    block = {"count": 10, "real_only": {"dice": 0.5}, "with_synthetic": {"dice": 0.55}, "gain": 0.05, "gain_se": 0.02}
    assert "above zero" in describe_gain("t", block, 5)
    assert "not shown" in describe_gain("t", {**block, "gain_se": 0.03}, 5)
    assert "below zero" in describe_gain("t", {**block, "gain": -0.05}, 5)
