"""Training on flipped pairs (TrainConfig.flip_augment): every pair and its three flips, each encoded from flipped
pixels, masks flipped with their images; kept apart from the unflipped encoding in the run and in the shared cache."""

import json

import pytest
import torch

from alignflow.cli import main
from alignflow.data import FLIPS, all_flips, load_pairs, scan_dataset
from alignflow.errors import InputError
from alignflow.generator.config import TrainConfig
from alignflow.generator.latent_codec import build_codec
from alignflow.generator.model import GeneratorConfig
from alignflow.generator.training import train
from alignflow.runs.checkpoint import load_tensors

TINY_GENERATOR = {"resolution": 32, "num_layers": 1, "controlnet_layers": 1, "attention_head_dim": 8,
                  "num_attention_heads": 2, "context_tokens": 2, "patch_size": 1}


def run(source, out, **extra):
    train(TrainConfig(source=str(source), out=str(out), steps=1, batch_size=2, device="cpu", checkpoint_every=100,
                      preview_every=100, generator=dict(TINY_GENERATOR), **extra))
    return load_tensors(out / "latents.safetensors"), json.loads((out / "latents.json").read_text())["stems"]


def test_all_flips_orders_the_batch_then_its_flips():
    batch = torch.arange(2 * 3 * 3).reshape(2, 3, 3)
    flips = all_flips(batch)
    assert flips.shape == (8, 3, 3)
    torch.testing.assert_close(flips[:2], batch)
    torch.testing.assert_close(flips[2:4], batch.flip(-1))  # horizontal: columns reversed
    torch.testing.assert_close(flips[4:6], batch.flip(-2))
    torch.testing.assert_close(flips[6:], batch.flip(-1).flip(-2))
    assert [name for name, _ in FLIPS] == ["", "hflip", "vflip", "hvflip"]


def test_flipped_rows_are_the_encodings_of_flipped_pixels(kvasir, make_pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    make_pairs(kvasir, tmp_path / "data", 3)
    plain, plain_stems = run(tmp_path / "data", tmp_path / "plain")
    flipped, flipped_stems = run(tmp_path / "data", tmp_path / "flipped", flip_augment=True)
    assert len(plain["images"]) == 3 and len(flipped["images"]) == len(flipped["masks"]) == 12  # not the cached 3
    assert flipped_stems[:3] == plain_stems and flipped_stems[3].endswith(":hflip") and flipped_stems[-1].endswith(":hvflip")
    torch.testing.assert_close(flipped["images"][:3], plain["images"])

    codec = build_codec(GeneratorConfig.from_dict({**TINY_GENERATOR, "num_classes": 2}), torch.device("cpu"))
    images, masks = load_pairs(scan_dataset(tmp_path / "data"), 32)
    with torch.no_grad():
        expected_images = codec.raw_image_latents(all_flips(images))
        expected_masks = codec.raw_mask_latents(all_flips(masks))
    torch.testing.assert_close(flipped["images"], expected_images, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(flipped["masks"], expected_masks, rtol=1e-4, atol=1e-4)
    # The autoencoder is not flip-equivariant: flipping the latents would not give these rows.
    assert not torch.allclose(flipped["images"][3:6], plain["images"].flip(-1), atol=1e-3)

    _, again = run(tmp_path / "data", tmp_path / "again", flip_augment=True)  # the shared cache keeps both encodings
    events = [json.loads(line) for line in (tmp_path / "again" / "events.jsonl").read_text().splitlines()]
    assert again == flipped_stems and [e.get("cached") for e in events if e.get("stage") == "encode"] == [True]


def test_the_flag_reaches_the_run_and_a_non_boolean_is_refused(kvasir, make_pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    make_pairs(kvasir, tmp_path / "data", 2)
    code = main(["train", "--source", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--steps", "1",
                 "--resolution", "32", "--batch-size", "2", "--device", "cpu", "--flip-augment"])
    assert code == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["flip_augment"] is True
    assert len(load_tensors(tmp_path / "run" / "latents.safetensors")["images"]) == 8
    with pytest.raises(InputError, match="flip_augment"):
        TrainConfig(source="x", out="y", flip_augment="yes").validate()
