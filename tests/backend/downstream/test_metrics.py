"""Dice, IoU and HD95 on masks whose answers are known."""

import pytest
import torch

from alignflow.downstream.metrics import region_masks, score_segmentations, summarize_scores


def square(size: int = 64, top: int = 16, left: int = 16, side: int = 20, label: int = 1) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[top : top + side, left : left + side] = label
    return mask


def test_identical_masks_score_one_and_zero_distance():
    mask = torch.stack([square(), square(top=5, side=30)])
    scores = score_segmentations(mask, mask, num_classes=2)
    assert scores.dice.tolist() == [1.0, 1.0] and scores.iou.tolist() == [1.0, 1.0] and scores.hd95.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("shift", [1, 3, 7])
def test_hd95_of_a_shifted_square_is_the_shift(shift):
    truth, predicted = square()[None], square(left=16 + shift)[None]
    scores = score_segmentations(predicted, truth, num_classes=2)
    assert float(scores.hd95[0]) == pytest.approx(shift)
    overlap = 20 - shift  # columns the two 20 x 20 squares share
    assert float(scores.dice[0]) == pytest.approx(overlap / 20)
    assert float(scores.iou[0]) == pytest.approx(overlap / (20 + shift))


def test_empty_cases_follow_the_documented_conventions():
    empty = torch.zeros(1, 64, 64, dtype=torch.long)
    both_empty = score_segmentations(empty, empty, num_classes=2)
    assert float(both_empty.dice[0]) == 1.0 and float(both_empty.iou[0]) == 1.0 and torch.isnan(both_empty.hd95[0])
    missed = score_segmentations(empty, square()[None], num_classes=2)
    assert float(missed.dice[0]) == 0.0 and float(missed.iou[0]) == 0.0 and torch.isnan(missed.hd95[0])
    spurious = score_segmentations(square()[None], empty, num_classes=2)
    assert float(spurious.dice[0]) == 0.0 and torch.isnan(spurious.hd95[0])


def test_multi_class_scores_are_means_over_foreground_classes():
    truth = square(side=30) + square(top=24, left=24, side=10)  # class 1 ring around a class-2 core
    predicted = square(side=30) + square(top=24, left=26, side=10)  # the core shifted by 2 px
    scores = score_segmentations(predicted[None], truth[None], num_classes=3)
    assert scores.class_dice.shape == (1, 2)
    assert float(scores.dice[0]) == pytest.approx(float(scores.class_dice[0].mean()))
    assert float(scores.class_dice[0, 1]) == pytest.approx(8 / 10)
    assert float(scores.class_hd95[0, 1]) == pytest.approx(2)
    assert float(scores.hd95[0]) == pytest.approx(float(scores.class_hd95[0].mean()))
    # A class absent from both prediction and truth: Dice 1 and left out of the HD95 mean.
    absent = score_segmentations(square()[None], square()[None], num_classes=3)
    assert float(absent.class_dice[0, 1]) == 1.0 and float(absent.hd95[0]) == 0.0 and torch.isnan(absent.class_hd95[0, 1])


def test_summary_counts_undefined_hd95_and_keeps_every_image():
    truth = torch.stack([square(), square(), square()])
    predicted = torch.stack([square(), square(left=20), torch.zeros(64, 64, dtype=torch.long)])
    summary = summarize_scores(score_segmentations(predicted, truth, 2), ["a", "b", "c"])
    assert summary["count"] == 3 and summary["hd95_undefined"] == 1
    assert summary["hd95"] == pytest.approx(2.0) and summary["hd95_std"] == pytest.approx(2.0)  # mean of 0 and 4
    assert summary["dice"] == pytest.approx((1 + 16 / 20 + 0) / 3)
    assert [row["stem"] for row in summary["per_image"]] == ["a", "b", "c"] and summary["per_image"][2]["hd95"] is None
    assert summary["per_class"]["1"]["dice"] == pytest.approx(summary["dice"])


def test_region_masks_join_class_ids():
    labels = torch.tensor([[0, 1, 2]])
    regions = region_masks(labels, {"disc": [1, 2], "cup": [2]})
    assert regions["disc"].tolist() == [[0, 1, 1]] and regions["cup"].tolist() == [[0, 0, 1]]
