"""The per-image uncertainty score: the mean of a map over the region some sample calls foreground, on the map's
fixed scale, so images rank by how unsure the ensemble is about the lesion, not by how much background they show."""

import numpy as np
import pytest

from alignflow.segmentation.uncertainty import image_score, maximum_value


def test_the_score_averages_over_the_foreground_region_only():
    samples = np.zeros((3, 4, 6), np.uint8)
    samples[0, 1:3, 1:3] = 1  # one of three samples finds a 2 x 2 lesion
    values = np.zeros((4, 6), np.float32)
    values[1:3, 1:3] = 0.5
    assert image_score(values, samples, "entropy", 2) == pytest.approx(0.5 / maximum_value("entropy", 2))
    wider = np.zeros((3, 4, 60), np.uint8)  # the same lesion in an image ten times as wide: the same score
    wider[:, :, :6] = samples
    wide_values = np.zeros((4, 60), np.float32)
    wide_values[:, :6] = values
    assert image_score(wide_values, wider, "entropy", 2) == image_score(values, samples, "entropy", 2)


def test_no_foreground_in_any_sample_scores_zero():
    assert image_score(np.ones((4, 4), np.float32), np.zeros((2, 4, 4), np.uint8), "variance", 3) == 0.0
