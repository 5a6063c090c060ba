"""MedFlowSeg training runs and segmentation on real data with a tiny model: run folder, events, checkpoints and
resume, the exported segmenter, ensembles at the images' own sizes, the 3-class Drishti-GS path, the tensor API."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from safetensors.torch import load_file

from alignflow.data import load_pairs, read_image, read_mask, scan_dataset
from alignflow.errors import InputError
from alignflow.runs.events import read_events
from alignflow.segmentation.config import SegmenterTrainConfig
from alignflow.segmentation.inference import load_segmenter, segment_images, write_segmentations
from alignflow.segmentation.trainer import train_segmenter


@pytest.fixture(scope="module")
def kvasir_small(tmp_path_factory, kvasir, make_pairs) -> Path:
    root = tmp_path_factory.mktemp("kvasir")
    make_pairs(kvasir, root, 6)
    return root


def config(source: Path | str, out: Path, steps: int, model: dict, **extra) -> SegmenterTrainConfig:
    return SegmenterTrainConfig(source=str(source), out=str(out), steps=steps, batch_size=2, device="cpu", model=model,
                                checkpoint_every=2, preview_every=100, log_every=1, **extra)


def test_run_folder_events_and_exported_segmenter(tmp_path, kvasir_small, tiny_model):
    folder = train_segmenter(config(kvasir_small, tmp_path / "run", 3, tiny_model))
    run = tmp_path / "run"
    assert folder == run / "segmenter"
    for name in ("config.json", "summary.json", "events.jsonl", "segmenter/model.safetensors", "segmenter/segmenter.json", "previews/step_0000003.png"):
        assert (run / name).is_file(), name
    events = list(read_events(run))
    kinds = [event["type"] for event in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "checkpoint" in kinds and kinds.count("progress") == 3
    progress = next(event for event in events if event["type"] == "progress")
    assert {"loss", "loss_vel", "loss_aux", "loss_dice", "loss_ce", "eta_s"} <= set(progress)
    info = json.loads((folder / "segmenter.json").read_text())["_info"]
    assert info["model"] == "medflowseg" and info["pairs"] == 6 and info["steps"] == 3
    # The export holds the EMA weights, and they load back exactly.
    segmenter = load_segmenter(run, "cpu")
    checkpoint = load_file(run / "checkpoints" / "step_0000003" / "model.safetensors")
    for name, value in segmenter.model.state_dict().items():
        assert torch.equal(value, checkpoint[f"ema.module.{name}"]), name


def test_existing_run_is_not_overwritten_without_resume(tmp_path, kvasir_small, tiny_model):
    train_segmenter(config(kvasir_small, tmp_path / "run", 1, tiny_model))
    with pytest.raises(InputError, match="resume"):
        train_segmenter(config(kvasir_small, tmp_path / "run", 1, tiny_model))


def test_resume_reproduces_an_uninterrupted_run(tmp_path, kvasir_small, tiny_model):
    straight = train_segmenter(config(kvasir_small, tmp_path / "straight", 4, tiny_model))
    train_segmenter(config(kvasir_small, tmp_path / "split", 2, tiny_model))
    resumed = train_segmenter(config(kvasir_small, tmp_path / "split", 4, tiny_model), resume=True)
    assert any(e["type"] == "resume" and e["step"] == 2 for e in read_events(tmp_path / "split"))
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Resuming a finished run returns its segmenter without training.
    again = train_segmenter(config(kvasir_small, tmp_path / "split", 4, tiny_model), resume=True)
    assert again == resumed and list(read_events(tmp_path / "split"))[-1].get("skipped") is True


def test_segment_images_ensemble_at_original_sizes(tmp_path, kvasir_small, clinicdb, tiny_model):
    train_segmenter(config(kvasir_small, tmp_path / "run", 2, tiny_model))
    segmenter = load_segmenter(tmp_path / "run" / "segmenter", "cpu")
    paths = [sorted((kvasir_small / "images").iterdir())[0], sorted((clinicdb / "images").iterdir())[0]]
    images = [read_image(path) for path in paths]
    result = segment_images(segmenter, images, num_samples=3, num_steps=2, seed=5, batch_size=1)
    assert len(result) == 2 and result.num_samples == 3
    for image, item in zip(images, result.images):
        height, width = image.shape[:2]
        assert item.labels.shape == (height, width) and item.labels.dtype == np.uint8
        assert item.samples.shape == (3, height, width) and item.posterior.shape == (2, height, width)
        assert set(item.uncertainty) == {"staple", "variance", "entropy"}
        agree = (item.samples == item.samples[0]).all(axis=0)
        assert not item.uncertainty["variance"][agree].any() and not item.uncertainty["entropy"][agree].any()
        assert (item.uncertainty["variance"][~agree] > 0).all() and (item.uncertainty["entropy"][~agree] > 0).all()
    # Seeded per image: the same image gives the same ensemble whatever the batching.
    again = segment_images(segmenter, images[1:], num_samples=3, num_steps=2, seed=6, batch_size=4)
    assert np.array_equal(again[0].samples, result[1].samples)
    out = write_segmentations(tmp_path / "out", [p.stem for p in paths], result)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["files"]) == 2 and manifest["num_samples"] == 3
    first = manifest["files"][0]
    assert np.array_equal(tifffile.imread(out / first["samples"]), result[0].samples)
    assert np.array_equal(tifffile.imread(out / first["uncertainty"]["entropy"]), result[0].uncertainty["entropy"])
    assert tifffile.imread(out / first["posterior"]).shape == result[0].posterior.shape
    assert np.array_equal(read_mask(out / first["labels"]), result[0].labels)


def test_drishti_three_classes_end_to_end(tmp_path, shared_data, make_pairs, tiny_model):
    data = tmp_path / "drishti"
    make_pairs(shared_data / "Drishti-GS_roi", data, 4)
    train_segmenter(config(data, tmp_path / "run", 2, tiny_model))
    segmenter = load_segmenter(tmp_path / "run", "cpu")
    assert segmenter.config.num_classes == 3
    image = read_image(sorted((data / "images").iterdir())[0])
    item = segment_images(segmenter, [image], num_samples=4, num_steps=2)[0]
    assert item.posterior.shape == (3, *image.shape[:2]) and item.labels.max() <= 2
    assert np.allclose(item.posterior.sum(axis=0), 1.0, atol=1e-4)


def test_training_from_tensors_and_their_checks(tmp_path, kvasir, tiny_model):
    images, masks = load_pairs(scan_dataset(kvasir, check_masks=False), 32, indices=range(4))
    folder = train_segmenter(config("", tmp_path / "run", 1, tiny_model, num_classes=3), images=images, masks=masks)
    assert json.loads((folder / "segmenter.json").read_text())["num_classes"] == 3
    with pytest.raises(InputError, match="model resolution 32"):
        train_segmenter(config("", tmp_path / "r2", 1, tiny_model), images=torch.rand(2, 3, 48, 48), masks=torch.zeros(2, 48, 48, dtype=torch.long))
    with pytest.raises(InputError, match="masks"):
        train_segmenter(config("", tmp_path / "r3", 1, tiny_model), images=images, masks=masks.float())
    with pytest.raises(InputError, match="num_classes=2"):
        train_segmenter(config("", tmp_path / "r4", 1, tiny_model, num_classes=2), images=images, masks=masks * 2)


def test_segment_images_rejects_bad_arguments(tmp_path, kvasir_small, tiny_model):
    train_segmenter(config(kvasir_small, tmp_path / "run", 1, tiny_model))
    segmenter = load_segmenter(tmp_path / "run", "cpu")
    with pytest.raises(InputError, match="num_samples"):
        segment_images(segmenter, [np.zeros((8, 8, 3), np.uint8)], num_samples=0)
    with pytest.raises(InputError, match="fusion"):
        segment_images(segmenter, [np.zeros((8, 8, 3), np.uint8)], fusion="mean")
    with pytest.raises(InputError, match=r"images\[0\]"):
        segment_images(segmenter, [np.zeros((8, 8), np.float32)])
    with pytest.raises(InputError, match="segmenter"):
        load_segmenter(tmp_path, "cpu")


def test_init_continues_from_a_trained_segmenter_with_its_architecture(tmp_path, kvasir_small, shared_data, make_pairs, tiny_model):
    first = train_segmenter(config(kvasir_small, tmp_path / "first", 2, tiny_model))
    # A near-zero learning rate: the fine-tuned weights must still be the first run's (a fresh start would not be).
    # preset/resolution differ from the first run's on purpose: the initial segmenter's architecture is used.
    tuned = train_segmenter(config(kvasir_small, tmp_path / "tuned", 1, {}, init=str(tmp_path / "first"), lr=1e-12, resolution=64))
    fresh = train_segmenter(config(kvasir_small, tmp_path / "fresh", 1, tiny_model, lr=1e-12, seed=5))
    a, b, c = (load_file(str(folder / "model.safetensors")) for folder in (first, tuned, fresh))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[key], b[key], atol=1e-6) for key in a)
    assert not all(torch.allclose(a[key], c[key], atol=1e-6) for key in a)
    info = json.loads((tuned / "segmenter.json").read_text())
    assert info["resolution"] == 32 and info["_info"]["init"]["folder"] == str(first)
    # Data with other classes than the initial segmenter's: named, before training.
    drishti = tmp_path / "drishti"
    make_pairs(shared_data / "Drishti-GS_roi", drishti, 2)
    with pytest.raises(InputError, match="2 classes like the segmenter in --init"):
        train_segmenter(config(drishti, tmp_path / "bad", 1, {}, init=str(first)))
