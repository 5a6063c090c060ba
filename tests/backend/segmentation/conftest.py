"""A tiny MedFlowSeg configuration (every module present: DB-SA, N = 4 FA-Attention layers, R = 2) for fast tests."""

from __future__ import annotations

import pytest

TINY_MODEL = {"channels": [8, 8, 16, 16], "res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4, "token_dim": 16,
              "attention_heads": 2, "resolution": 32}


@pytest.fixture(scope="session")
def tiny_model() -> dict:
    return dict(TINY_MODEL)
