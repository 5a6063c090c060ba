"""Real training runs on real data: resume reproduces an uninterrupted run; the main job runs end to end."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from alignflow.cli import main
from alignflow.generator.config import TrainConfig
from alignflow.generator.training import train
from alignflow.runs.events import read_events

TINY_MASK_GENERATOR = {"num_layers": 1, "attention_head_dim": 8, "num_attention_heads": 2, "context_tokens": 2}
TINY_GENERATOR = {"resolution": 32, "num_layers": 2, "controlnet_layers": 1, "attention_head_dim": 8,
                  "num_attention_heads": 2, "context_tokens": 2, "patch_size": 1}


@pytest.fixture(scope="module")
def kvasir_small(tmp_path_factory, kvasir, make_pairs) -> Path:
    root = tmp_path_factory.mktemp("kvasir")
    make_pairs(kvasir, root, 6)
    return root


@pytest.fixture(scope="module")
def references(tmp_path_factory, clinicdb) -> Path:
    root = tmp_path_factory.mktemp("refs")
    for image in sorted((clinicdb / "images").glob("*.png"))[100:104]:
        shutil.copy(image, root / image.name)
    return root


def config(source: Path, out: Path, steps: int, **extra) -> TrainConfig:
    return TrainConfig(source=str(source), out=str(out), steps=steps, batch_size=2, device="cpu", checkpoint_every=2,
                       preview_every=100, log_every=1, generator=dict(TINY_GENERATOR), **extra)


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(tmp_path, kvasir_small):
    whole = train(config(kvasir_small, tmp_path / "whole", 4))
    train(config(kvasir_small, tmp_path / "split", 2))  # "killed" after step 2
    resumed = train(config(kvasir_small, tmp_path / "split", 4), resume=True)
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    events = [e["type"] for e in read_events(tmp_path / "split")]
    assert "resume" in events and events[-1] == "done"


def test_interrupt_after_an_update_checkpoints_that_step_and_resumes_exactly(tmp_path, kvasir_small):
    """Ctrl-C in a listener after step 3's update (not a checkpoint step): the checkpoint must be step 3's."""
    def interrupt_at_step_3(event: dict) -> None:
        if event["type"] == "progress" and event["step"] == 3:
            raise KeyboardInterrupt

    whole = train(config(kvasir_small, tmp_path / "whole", 4))
    with pytest.raises(KeyboardInterrupt):
        train(config(kvasir_small, tmp_path / "split", 4), listeners=[interrupt_at_step_3])
    checkpoints = [e["step"] for e in read_events(tmp_path / "split") if e["type"] == "checkpoint"]
    assert checkpoints == [2, 3]
    resumed = train(config(kvasir_small, tmp_path / "split", 4), resume=True)
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_stage2_alignment_run_writes_loss_terms_and_timings(tmp_path, kvasir_small, references):
    stage1 = train(config(kvasir_small, tmp_path / "s1", 2))
    stage2 = train(config(kvasir_small, tmp_path / "s2", 2, stage=2, init=str(stage1.parent), references=str(references),
                          num_references=3, align_batch_size=2))
    progress = [e for e in read_events(tmp_path / "s2") if e["type"] == "progress" and e.get("stage") == 2]
    assert progress and all("loss_align" in e and "loss_denoising" in e for e in progress)
    summary = json.loads((tmp_path / "s2" / "summary.json").read_text())
    assert {"align_nograd_steps", "align_graded_step", "align_decode", "align_features"} <= summary["seconds_per_step"].keys()
    info = json.loads((stage2 / "generator.json").read_text())["_info"]
    assert len(info["references"]) == 3 and [h["stage"] for h in info["history"]] == [1, 2]


def test_fewer_references_than_asked_is_an_input_error(tmp_path, kvasir_small, references, capsys):
    stage1 = train(config(kvasir_small, tmp_path / "s1", 1))
    code = main(["align", "--init", str(stage1), "--source", str(kvasir_small), "--references", str(references),
                 "--num-references", "10", "--out", str(tmp_path / "s2"), "--device", "cpu"])
    assert code == 2 and "references" in capsys.readouterr().err


def test_augment_end_to_end_on_real_images(tmp_path, kvasir_small, references, capsys):
    config_file = tmp_path / "augment.yaml"
    config_file.write_text(json.dumps({"generator": TINY_GENERATOR, "train": {"checkpoint_every": 50, "preview_every": 50},
                                       "mask_generator": TINY_MASK_GENERATOR, "postprocess": {"min_area": 0}}))
    out = tmp_path / "job"
    code = main(["augment", "--config", str(config_file), "--source", str(kvasir_small), "--references", str(references),
                 "--num-references", "4", "--out", str(out), "--resolution", "32", "--stage1-steps", "4",
                 "--stage2-steps", "2", "--batch-size", "2", "--sample-steps", "3", "--num-generated", "4", "--device", "cpu",
                 "--synthetic-masks", "3", "--mask-steps", "3", "--mask-candidates", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "stage1" in printed and "aligned" in printed and "KID" in printed
    report = json.loads((out / "report.json").read_text())
    for name in ("stage1", "aligned"):
        entry = report["models"][name]
        assert isinstance(entry["kid"], float) and entry["generated"] == 4
        pairs = Path(entry["pairs"])
        stems = sorted(p.stem for p in (pairs / "images").iterdir())
        assert stems == sorted(p.stem for p in (pairs / "masks").iterdir()) and len(stems) == 4
        manifest = json.loads((pairs / "manifest.json").read_text())
        assert len(manifest) == 4 and all(row["synthetic"] for row in manifest)
    # generated images come back at each source mask's original size
    from alignflow.data import read_image, read_mask

    stem = stems[0]
    assert read_image(pairs / "images" / f"{stem}.png").shape[:2] == read_mask(kvasir_small / "masks" / f"{stem}.png").shape
    # --synthetic-masks: new masks from the mask generator (best of K each) became images too
    synthetic = report["models"]["aligned_synthetic_masks"]
    masks_made = sorted(p.stem for p in (out / "synthetic_masks" / "masks").iterdir())
    assert 1 <= synthetic["generated"] == len(masks_made) <= 3 and all(stem.endswith("_synthetic") for stem in masks_made)
    assert sorted(p.stem for p in (Path(synthetic["pairs"]) / "images").iterdir()) == masks_made
    # the augmented training set: 6 real pairs + 4 aligned images of source masks + the synthetic-mask pairs
    dataset = json.loads((Path(report["export"]) / "dataset.json").read_text())
    assert dataset["numTraining"] == 6 + 4 + synthetic["generated"]
    rows = json.loads((Path(report["export"]) / "manifest.json").read_text())["samples"]
    assert all(len(row["checkpoint_sha256"]) == 64 for row in rows if row["origin"] == "synthetic")


def test_generate_is_reproducible_per_sample_whatever_the_batch(tmp_path, kvasir_small):
    stage1 = train(config(kvasir_small, tmp_path / "s1", 2))
    args = ["generate", "--generator", str(stage1), "--masks", str(kvasir_small / "masks"), "--steps", "2", "--limit", "3",
            "--seed", "5", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "a"), "--batch-size", "3"]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--batch-size", "1"]) == 0
    a = sorted((tmp_path / "a" / "images").iterdir())
    b = sorted((tmp_path / "b" / "images").iterdir())
    assert len(a) == 3 and [p.name for p in a] == [p.name for p in b]
    from alignflow.data import read_image

    for x, y in zip(a, b):
        assert np.abs(read_image(x).astype(int) - read_image(y).astype(int)).max() <= 1
    assert not np.array_equal(read_image(a[0]), read_image(a[1]))


def test_demo_wiring_on_the_bundled_phantom(tmp_path, monkeypatch, capsys):
    """The README's main job, with tiny step counts: phantom made in the cache, references and target from scanner B."""
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps({"generator": TINY_GENERATOR}))
    code = main(["augment", "--demo", "--config", str(config_file), "--out", str(tmp_path / "demo"), "--resolution", "32",
                 "--stage1-steps", "2", "--stage2-steps", "1", "--sample-steps", "2", "--num-generated", "4", "--device", "cpu"])
    assert code == 0
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["kid_target"] == "target images" and report["models"]["aligned"]["target"] == 32
    assert len(json.loads((tmp_path / "demo" / "stage2" / "generator" / "generator.json").read_text())["_info"]["references"]) == 8
