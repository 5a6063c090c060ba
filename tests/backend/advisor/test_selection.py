"""Reference advisor maths on features built so that the answer is known: clusters, a planted outlier, identical sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignflow.advisor.selection import (
    Band,
    NoiseFloor,
    criticisms,
    enough_k,
    gram_matrix,
    herd_prototypes,
    k_grid,
    natural_key,
    noise_floor,
    random_halves,
    random_subset_curve,
    shift_verdict,
    split_mmd,
    subset_mmd,
)
from alignflow.errors import InputError
from alignflow.rewards import mmd_biased, mmd_unbiased

DIM = 32


def cluster(centre: torch.Tensor, count: int, generator: torch.Generator, spread: float = 0.3) -> torch.Tensor:
    return centre + spread * torch.randn(count, DIM, generator=generator, dtype=torch.float64)


def two_clusters(seed: int, big: int = 80, small: int = 20) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, DIM, generator=generator, dtype=torch.float64)
    return torch.cat([cluster(a, big, generator), cluster(b, small, generator)])


def test_gram_estimators_equal_the_rewards_mmd():
    features = two_clusters(0, 30, 10)
    gram = gram_matrix(features)
    subset, a, b = [3, 7, 31, 12], list(range(0, 40, 2)), list(range(1, 40, 2))
    # rewards.mmd computes in float32, the Gram matrix in float64
    assert subset_mmd(gram, subset) == pytest.approx(mmd_biased(features[subset], features).item(), rel=1e-5)
    assert split_mmd(gram, a, b) == pytest.approx(mmd_unbiased(features[a], features[b]).item(), rel=1e-4, abs=1e-5)
    assert split_mmd(gram, a, b, unbiased=False) == pytest.approx(mmd_biased(features[a], features[b]).item(), rel=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_five_picks_cover_an_80_20_mixture_in_proportion(seed):
    features = two_clusters(seed)
    picks, values = herd_prototypes(gram_matrix(features), 5)
    assert len(set(picks)) == 5
    assert sum(i >= 80 for i in picks) == 1  # 4 from the big cluster, 1 from the small one
    # The reported curve is the MMD of the first k picks, and herding beats the median random subset at every k.
    gram = gram_matrix(features)
    for k in range(1, 6):
        assert values[k - 1] == pytest.approx(subset_mmd(gram, picks[:k]), rel=1e-9, abs=1e-12)
    bands = random_subset_curve(gram, [1, 2, 3, 5], draws=100, rng=np.random.default_rng(0))
    assert all(values[k - 1] < band.median for k, band in zip([1, 2, 3, 5], bands))


def test_herding_is_nested_and_deterministic():
    gram = gram_matrix(two_clusters(1))
    assert herd_prototypes(gram, 10)[0][:4] == herd_prototypes(gram, 4)[0]
    assert herd_prototypes(gram, 10) == herd_prototypes(gram, 10)
    with pytest.raises(InputError, match="k"):
        herd_prototypes(gram, 101)


def test_planted_outlier_is_the_first_criticism_and_never_a_pick():
    generator = torch.Generator().manual_seed(3)
    centre = torch.randn(DIM, generator=generator, dtype=torch.float64)
    features = cluster(centre, 100, generator, spread=1.0)  # one broad cloud, like real image features
    features = torch.cat([features[:50], -centre[None], features[50:]])  # pointing away from the cloud
    picks, _ = herd_prototypes(gram_matrix(features), 5)
    found = criticisms(features, 3, exclude=picks)
    assert found[0].index == 50 and found[0].outlier
    assert not any(c.outlier for c in found[1:])  # the others are ordinary members of the cloud
    assert 50 not in picks


def test_identical_sets_are_within_noise_and_a_shift_is_large():
    features = two_clusters(4, 150, 50)
    floor = noise_floor(gram_matrix(features), splits=50, rng=np.random.default_rng(0))
    assert shift_verdict(features, features.clone(), floor).verdict == "within noise"
    shifted = shift_verdict(features + 1.0, features, floor)
    assert shifted.verdict == "large shift" and shifted.ratio > 10
    generator = torch.Generator().manual_seed(9)
    fresh = torch.cat([cluster(features[:80].mean(0), 150, generator), cluster(features[150:].mean(0), 50, generator)])
    assert shift_verdict(fresh, features, floor).verdict == "within noise"  # a new draw of the same mixture


def test_noise_floor_depends_only_on_the_seed():
    gram = gram_matrix(two_clusters(5))
    first = noise_floor(gram, 30, np.random.default_rng(7))
    assert first == noise_floor(gram, 30, np.random.default_rng(7))
    assert first != noise_floor(gram, 30, np.random.default_rng(8))
    assert first.between_halves_unbiased.low < 0 < first.between_halves_unbiased.high  # Eq. 9 is centred on 0


def test_enough_k_is_the_first_pick_count_below_the_median_split():
    floor = NoiseFloor(Band(0.1, 0.2, 0.3), Band(-0.1, 0.0, 0.1), splits=10, group_size=1)
    assert enough_k([0.9, 0.5, 0.2, 0.1], floor) == 3
    assert enough_k([0.9, 0.5], floor) is None


def test_grouped_halves_keep_runs_together_and_bad_groups_are_rejected():
    a, b = random_halves(40, np.random.default_rng(0), group_size=5)
    assert len(a) == len(b) == 20 and not set(a) & set(b)
    assert {i // 5 for i in a}.isdisjoint({i // 5 for i in b})
    gram = gram_matrix(two_clusters(6, 30, 10))
    with pytest.raises(InputError, match="--group-size"):
        noise_floor(gram, 5, np.random.default_rng(0), group_size=11)
    with pytest.raises(InputError, match="at least 4"):
        noise_floor(gram[:3, :3], 5, np.random.default_rng(0))


def test_k_grid_and_natural_order():
    assert k_grid(612, [10]) == [1, 2, 3, 5, 10, 20, 50, 100, 200, 500]
    assert k_grid(8, [7]) == [1, 2, 3, 5, 7]
    assert sorted(["10.png", "2.png", "1.png"], key=natural_key) == ["1.png", "2.png", "10.png"]
