"""The encoded training set is reused across runs on the same files and settings (generator/latent_cache.py), and
encoded again when a file, the resolution or the autoencoder changes."""

import json
import shutil

import torch

from alignflow.data import read_mask, scan_dataset, write_mask
from alignflow.generator import latent_cache
from alignflow.generator.config import TrainConfig
from alignflow.generator.training import train
from alignflow.runs.checkpoint import load_tensors

TINY_GENERATOR = {"resolution": 32, "num_layers": 1, "controlnet_layers": 1, "attention_head_dim": 8,
                  "num_attention_heads": 2, "context_tokens": 2, "patch_size": 1}


def run(source, out):
    train(TrainConfig(source=str(source), out=str(out), steps=1, batch_size=2, device="cpu", checkpoint_every=100,
                      preview_every=100, generator=dict(TINY_GENERATOR)))
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return [e for e in events if e.get("stage") == "encode"], load_tensors(out / "latents.safetensors")


def test_a_second_run_on_the_same_files_reuses_the_encoding(kvasir, make_pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    make_pairs(kvasir, tmp_path / "data", 4)
    first_events, first = run(tmp_path / "data", tmp_path / "run1")
    assert not any(e.get("cached") for e in first_events)
    shutil.copytree(tmp_path / "data", tmp_path / "moved")  # another folder, the same files: the same key
    second_events, second = run(tmp_path / "moved", tmp_path / "run2")
    assert [e.get("cached") for e in second_events] == [True] and second_events[0]["total"] == 4
    for name in ("images", "masks", "preview_masks"):
        torch.testing.assert_close(second[name], first[name], rtol=0, atol=0)

    mask = sorted((tmp_path / "moved" / "masks").iterdir())[0]
    write_mask(mask, read_mask(mask)[::-1], binary_as_255=True)  # the same size, other content
    third_events, _ = run(tmp_path / "moved", tmp_path / "run3")  # one mask's content changed: encoded again
    assert not any(e.get("cached") for e in third_events)


def test_the_key_follows_content_order_and_settings(kvasir, make_pairs, tmp_path):
    make_pairs(kvasir, tmp_path / "data", 3)
    pairs = scan_dataset(tmp_path / "data").pairs
    codec = {"autoencoder": "TinyAutoencoder", "num_classes": 2, "weights": None}
    key = latent_cache.cache_key(pairs, 32, codec)
    assert key == latent_cache.cache_key(list(pairs), 32, dict(codec))
    assert key != latent_cache.cache_key(pairs[::-1], 32, codec)
    assert key != latent_cache.cache_key(pairs, 64, codec)
    assert key != latent_cache.cache_key(pairs, 32, {**codec, "autoencoder": "AutoencoderKL"})


def test_a_damaged_entry_is_encoded_again_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache" / "latents").mkdir(parents=True)
    (tmp_path / "cache" / "latents" / "abc.safetensors").write_bytes(b"not safetensors")
    assert latent_cache.load_cached("abc") is None
