"""Fixtures shared across engine areas: a small evaluator segmenter trained on real Kvasir-SEG pairs (fidelity
metric, fidelity filtering at generation, the mask-consistency reward)."""

from pathlib import Path

import pytest

from alignflow.fidelity.training import EvaluatorTrainConfig, train_evaluator

SMALL_UNET = {"channels": [8, 16, 32, 64], "num_res_units": 1, "resolution": 64}


@pytest.fixture(scope="session")
def kvasir_eight(tmp_path_factory, kvasir, make_pairs) -> Path:
    root = tmp_path_factory.mktemp("kvasir8")
    make_pairs(kvasir, root, 8)
    return root


@pytest.fixture(scope="session")
def evaluator(tmp_path_factory, kvasir_eight) -> Path:
    """Overfits its 8 training pairs: good enough to tell a lesion where the mask says from one a quarter away."""
    out = tmp_path_factory.mktemp("evaluator") / "run"
    config = EvaluatorTrainConfig(source=str(kvasir_eight), out=str(out), source_half="all", steps=150, batch_size=8,
                                  lr=3e-3, device="cpu", checkpoint_every=1000, preview_every=1000, log_every=50,
                                  model=dict(SMALL_UNET))
    return train_evaluator(config)
