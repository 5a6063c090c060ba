"""Best-of-K filtering and ``alignflow masks`` end to end, with a tiny mask generator trained on real masks."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from alignflow.cli import main
from alignflow.data import load_masks, read_mask, scan_dataset
from alignflow.errors import InputError
from alignflow.masks.synthesis import (
    MaskSynthesisConfig,
    best_of_k,
    degenerate_masks,
    generate_raw_masks,
    load_mask_generator,
    mask_features,
    synthesize_masks,
)
from alignflow.masks.training import MaskTrainConfig, train_mask_generator
from alignflow.models.feature_encoders import build_feature_encoder

TINY = {"resolution": 64, "num_layers": 1, "attention_head_dim": 8, "num_attention_heads": 2, "context_tokens": 2}


@pytest.fixture(scope="module")
def kvasir_small(tmp_path_factory, kvasir, make_pairs) -> Path:
    root = tmp_path_factory.mktemp("kvasir_masks")
    make_pairs(kvasir, root, 12)
    return root


@pytest.fixture(scope="module")
def mask_generator(tmp_path_factory, kvasir_small) -> Path:
    out = tmp_path_factory.mktemp("maskgen") / "run"
    config = MaskTrainConfig(source=str(kvasir_small), out=str(out), steps=30, batch_size=8, lr=1e-3, device="cpu",
                             preview_every=100, generator=dict(TINY))
    return train_mask_generator(config)


def test_best_of_k_picks_the_most_similar_valid_candidate():
    reference = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([
        [[0.0, 1.0], [1.0, 0.1], [0.7, 0.7]],  # 2nd is closest to [1, 0]
        [[0.0, 1.0], [1.0, 0.0], [0.1, 1.0]],  # 1st is closest to [0, 1] but is marked invalid -> 3rd
    ])
    valid = torch.tensor([[True, True, True], [False, True, True]])
    index, similarity = best_of_k(reference, candidates, valid)
    assert index.tolist() == [1, 2]
    assert similarity[0] == pytest.approx(float(torch.nn.functional.cosine_similarity(candidates[0, 1], reference[0], dim=0)))
    index, similarity = best_of_k(reference, candidates, torch.zeros(2, 3, dtype=torch.bool))
    assert index.tolist() == [-1, -1] and torch.isinf(similarity).all()


def test_the_feature_encoder_prefers_a_slightly_moved_copy_of_the_real_mask(kvasir):
    """A constructed case with a known answer, through the real EfficientNet-Lite0 features."""
    masks = load_masks([p.mask for p in scan_dataset(kvasir).pairs[:4]], 128)
    real = masks[0]
    moved = torch.roll(real, shifts=(3, -2), dims=(0, 1))
    candidates = torch.stack([masks[1], masks[2], moved, masks[3]])
    encoder = build_feature_encoder("efficientnet-lite0")
    index, _ = best_of_k(mask_features(encoder, real[None], 2), mask_features(encoder, candidates, 2)[None])
    assert int(index[0]) == 2


def test_degenerate_masks_are_empty_or_all_foreground():
    masks = torch.zeros(3, 10, 10, dtype=torch.long)
    masks[1, :5] = 1  # half foreground: fine
    masks[2] = 2  # all foreground (any class > 0)
    assert degenerate_masks(masks, 0.01, 0.95).tolist() == [True, False, True]


def test_generation_is_seeded_and_strength_makes_variations(mask_generator, kvasir_small):
    generator = load_mask_generator(mask_generator, torch.device("cpu"))
    a = generate_raw_masks(generator, [1, 2], num_steps=4)
    b = generate_raw_masks(generator, [2], num_steps=4)
    assert a.shape == (2, 64, 64) and torch.allclose(a[1], b[0], atol=1e-5)
    init = load_masks([p.mask for p in scan_dataset(kvasir_small).pairs[:2]], 64)
    close = generate_raw_masks(generator, [1, 2], num_steps=10, init_masks=init, strength=0.1)
    fresh = generate_raw_masks(generator, [1, 2], num_steps=10)
    error = lambda raw: float((raw - init.float()).abs().mean())  # noqa: E731
    assert error(close) < error(fresh)
    with pytest.raises(InputError, match="strength"):
        generate_raw_masks(generator, [1], strength=0.0)
    with pytest.raises(InputError, match="init_masks"):
        generate_raw_masks(generator, [1], strength=0.5)


def test_synthesize_masks_writes_valid_masks_and_a_manifest(tmp_path, mask_generator, kvasir_small):
    out = tmp_path / "synthetic"
    config = MaskSynthesisConfig(generator=str(mask_generator), masks=str(kvasir_small), out=str(out), num_masks=3,
                                 candidates=3, sample_steps=4, device="cpu", min_foreground=0.0, max_foreground=1.0)
    report = synthesize_masks(config)
    rows = json.loads((out / "manifest.json").read_text())
    files = sorted((out / "masks").glob("*.png"))
    assert report["kept"] == len(rows) == len(files) == 3
    for row, path in zip(sorted(rows, key=lambda r: r["stem"]), files):
        mask = read_mask(path)
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 1}
        assert row["stem"] == path.stem and 0 <= row["candidate"] < 3 and row["postprocess"]["num_classes"] == 2
        assert row["seed"] == int(row["candidate"]) + 3 * sorted(p.stem for p in (kvasir_small / "masks").iterdir()).index(Path(row["reference_mask"]).stem)
    events = [json.loads(line)["type"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "done"


def test_cli_reports_bad_parameters_and_the_wrong_kind_of_generator(tmp_path, mask_generator, kvasir_small, capsys):
    assert main(["masks", "--generator", str(mask_generator), "--masks", str(kvasir_small), "--out", str(tmp_path / "o"), "-k", "0"]) == 2
    assert "candidates" in capsys.readouterr().err
    assert main(["masks", "--generator", str(mask_generator), "--masks", str(kvasir_small), "--out", str(tmp_path / "o"), "--opening-radius", "-1"]) == 2
    assert "opening_radius" in capsys.readouterr().err
    assert main(["masks", "--generator", str(kvasir_small), "--masks", str(kvasir_small), "--out", str(tmp_path / "o")]) == 2
    assert "generator" in capsys.readouterr().err
