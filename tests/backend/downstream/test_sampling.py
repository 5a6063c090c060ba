"""How batches are composed from real and synthetic pairs."""

import pytest
import torch

from alignflow.downstream.evaluate import medflowseg_training_pairs
from alignflow.downstream.training import TrainingPairs, draw_batch


def synthetic_counts(share, batch_size=8, draws=4000, real=10, synthetic=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    counts = []
    for _ in range(draws):
        real_index, synthetic_index = draw_batch(real, synthetic, batch_size, share, generator)
        assert len(real_index) + len(synthetic_index) == batch_size
        assert (real_index < real).all() and (synthetic_index < synthetic).all()
        counts.append(len(synthetic_index))
    return torch.tensor(counts, dtype=torch.float)


def test_a_share_that_divides_the_batch_is_exact_in_every_batch():
    assert synthetic_counts(0.25).tolist() == [2.0] * 4000
    assert synthetic_counts(0.5, batch_size=4).unique().tolist() == [2.0]
    assert synthetic_counts(0.0).sum() == 0


def test_other_shares_are_exact_in_expectation_and_within_one_pair():
    counts = synthetic_counts(0.3)  # 2.4 of 8
    assert set(counts.unique().tolist()) == {2.0, 3.0}
    assert counts.mean() == pytest.approx(2.4, abs=0.05)


def test_no_share_draws_uniformly_from_the_union():
    counts = synthetic_counts(None)
    assert counts.mean() / 8 == pytest.approx(6 / 16, abs=0.02)
    assert synthetic_counts(0.5, synthetic=0).sum() == 0  # nothing synthetic to draw


def test_draws_are_seeded():
    assert torch.equal(synthetic_counts(0.3, draws=50, seed=3), synthetic_counts(0.3, draws=50, seed=3))
    first = draw_batch(10, 6, 8, 0.3, torch.Generator().manual_seed(1))
    again = draw_batch(10, 6, 8, 0.3, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_medflowseg_pool_gives_the_share_in_expectation():
    real, synthetic = torch.zeros(9, 3, 4, 4), torch.ones(4, 3, 4, 4)
    pairs = TrainingPairs(real, torch.zeros(9, 4, 4, dtype=torch.long), synthetic, torch.ones(4, 4, 4, dtype=torch.long), 2)
    for share, expected in ((0.25, 3), (0.5, 9), (0.0, 0), (None, 4)):
        images, masks = medflowseg_training_pairs(pairs, share, seed=0)
        assert len(images) == 9 + expected and int(images[:, 0, 0, 0].sum()) == expected and int(masks[:, 0, 0].sum()) == expected
    # Synthetic pairs are cycled, each used before any is repeated.
    images, _ = medflowseg_training_pairs(TrainingPairs(real, real[:, 0].long(), torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 4, 4), real[:4, 0].long(), 2), 0.5, seed=0)
    assert sorted(images[9:13, 0, 0, 0].tolist()) == [0.0, 1.0, 2.0, 3.0]
