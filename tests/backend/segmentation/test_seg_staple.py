"""STAPLE fusion (SimpleITK's EM + the recomputed posterior) and the uncertainty maps."""

import math

import numpy as np
import pytest
import SimpleITK as sitk

from alignflow.errors import InputError
from alignflow.segmentation.staple import staple, vote_fractions
from alignflow.segmentation.uncertainty import maximum_value, uncertainty_maps


def noisy_raters(truth: np.ndarray, rates: list[float], classes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raters = []
    for rate in rates:
        rater = truth.copy()
        flip = rng.random(truth.shape) < rate
        rater[flip] = rng.integers(0, classes, flip.sum())
        raters.append(rater)
    return np.stack(raters)


@pytest.fixture
def truth() -> np.ndarray:
    truth = np.zeros((40, 40), np.uint8)
    truth[5:30, 5:30] = 1
    truth[10:20, 10:20] = 2
    return truth


def test_labels_are_simpleitk_multilabel_staple(truth):
    samples = noisy_raters(truth, [0.02, 0.05, 0.1, 0.2, 0.3], 3)
    reference = sitk.GetArrayFromImage(sitk.MultiLabelSTAPLE([sitk.GetImageFromArray(s) for s in samples]))
    fused = staple(samples, 3)
    decided = reference < 3
    assert np.array_equal(fused.labels[decided], reference[decided])
    assert (fused.labels == truth).mean() > 0.99


def test_posterior_is_the_e_step_of_the_estimated_raters(truth):
    """W(x, l) = prior(l) prod_r theta_r[d_r(x), l], normalised; written out pixel by pixel here."""
    samples = noisy_raters(truth, [0.05, 0.1, 0.3], 3, seed=1)
    fused = staple(samples, 3)
    prior = np.bincount(samples.ravel(), minlength=3) / samples.size
    for y, x in [(0, 0), (12, 12), (25, 25), (7, 33)] + [tuple(p) for p in np.argwhere(samples.std(axis=0) > 0)[:20]]:
        likelihood = np.array([prior[c] * np.prod([fused.confusion[r, samples[r, y, x], c] for r in range(3)]) for c in range(3)])
        assert np.allclose(fused.posterior[:, y, x], likelihood / likelihood.sum(), atol=1e-5)
    assert np.allclose(fused.posterior.sum(axis=0), 1.0, atol=1e-5)
    assert np.array_equal(fused.labels, fused.posterior.argmax(axis=0))


def test_unreliable_rater_is_outweighed_where_a_vote_would_tie(truth):
    """Two good raters against two that are right only at random: STAPLE sides with the good ones at every tie."""
    binary = (truth > 0).astype(np.uint8)
    rng = np.random.default_rng(3)
    good = [binary.copy(), binary.copy()]
    good[0][0, :5] ^= 1  # a few honest mistakes so the EM sees imperfect raters
    good[1][39, :5] ^= 1
    bad = [rng.integers(0, 2, binary.shape).astype(np.uint8) for _ in range(2)]
    samples = np.stack(good + bad)
    fused = staple(samples, 2)
    ties = (samples.sum(axis=0) == 2) & (samples[0] == samples[1])
    assert ties.sum() > 100
    assert np.array_equal(fused.labels[ties], samples[0][ties])
    assert fused.confusion[0].trace() > fused.confusion[2].trace()


def test_agreeing_samples_give_their_labels_and_zero_uncertainty(truth):
    samples = np.stack([truth] * 5)
    fused = staple(samples, 3)
    assert np.array_equal(fused.labels, truth)
    maps = uncertainty_maps(samples, fused, 3)
    for kind, values in maps.items():
        assert values.shape == truth.shape and values.dtype == np.float32
        assert not values.any(), kind


def test_uncertainty_is_zero_exactly_where_samples_agree_and_known_where_they_split(truth):
    binary = (truth > 0).astype(np.uint8)
    samples = np.stack([binary] * 4)
    samples[:2, 0, 0] = 1  # pixel (0, 0): two of four say foreground
    samples[0, 39, 39] = 1  # pixel (39, 39): one of four
    fused = staple(samples, 2)
    maps = uncertainty_maps(samples, fused, 2)
    disagree = samples.std(axis=0) > 0
    for kind, values in maps.items():
        assert 0 <= values.min() and values.max() <= maximum_value(kind, 2) + 1e-6
    for kind in ("variance", "entropy"):
        assert not maps[kind][~disagree].any() and (maps[kind][disagree] > 0).all(), kind
    assert maps["variance"][0, 0] == pytest.approx(0.5) and maps["entropy"][0, 0] == pytest.approx(math.log(2))
    assert maps["variance"][39, 39] == pytest.approx(2 * 0.25 * 0.75)
    assert maps["entropy"][39, 39] == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert maps["staple"][0, 0] > 0


def test_vote_fractions_and_missing_classes():
    samples = np.array([[[0, 1]], [[0, 1]], [[0, 0]]], np.uint8)
    votes = vote_fractions(samples, 3)
    assert np.allclose(votes[:, 0, 1], [1 / 3, 2 / 3, 0])
    fused = staple(samples, 3)  # class 2 never sampled: its posterior is 0
    assert fused.posterior.shape == (3, 1, 2) and not fused.posterior[2].any()


def test_bad_samples_are_input_errors():
    with pytest.raises(InputError, match="samples"):
        staple(np.zeros((2, 4, 4), np.float32), 2)
    with pytest.raises(InputError, match="samples"):
        staple(np.full((2, 4, 4), 3, np.uint8), 3)
    with pytest.raises(InputError, match="samples"):
        staple(np.zeros((4, 4), np.uint8), 2)


def test_staple_uncertainty_stays_where_unreliable_raters_agree(truth):
    """Unlike vote variance and entropy, the STAPLE posterior discounts a unanimous vote of raters estimated to err."""
    samples = noisy_raters((truth > 0).astype(np.uint8), [0.3, 0.3, 0.3], 2, seed=2)
    fused = staple(samples, 2)
    maps = uncertainty_maps(samples, fused, 2)
    agree = (samples == samples[0]).all(axis=0)
    assert maps["staple"][agree].max() > 0 and not maps["entropy"][agree].any()
