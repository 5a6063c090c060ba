"""Scores of predicted label maps against ground truth: per image foreground Dice, IoU and HD95 (MONAI), and their
mean and spread over a test set.

Conventions, per image and foreground class (the image's score is the mean over foreground classes):
- Dice and IoU: a class absent from both prediction and truth scores 1, one predicted where there is none (or
  missed entirely) scores 0 (MONAI ``ignore_empty=False``, as the mask-fidelity metric counts).
- HD95 (95th percentile of the symmetric surface distances, in pixels at the scoring resolution): a class absent
  from both is left out of the mean; a class present in only one of them has no distance, and then the image's HD95
  is undefined (``None``) and counted in ``hd95_undefined`` instead of entering the mean, as is an image with no
  foreground in either.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class SegmentationScores:
    """Per image [N] and per image and foreground class [N, C - 1] scores; NaN marks an undefined HD95."""

    dice: torch.Tensor
    iou: torch.Tensor
    hd95: torch.Tensor
    class_dice: torch.Tensor
    class_iou: torch.Tensor
    class_hd95: torch.Tensor

    def __len__(self) -> int:
        return int(self.dice.shape[0])


def score_segmentations(predicted: torch.Tensor, truth: torch.Tensor, num_classes: int) -> SegmentationScores:
    """Scores of class-id maps ``predicted`` and ``truth`` [N, H, W] (see the module docstring for the conventions)."""
    from monai.metrics import compute_hausdorff_distance

    from alignflow.fidelity.metric import class_overlap, one_hot_maps

    if predicted.shape != truth.shape or predicted.ndim != 3:
        raise ValueError(f"predicted and truth must both be [N, H, W]; got {tuple(predicted.shape)} and {tuple(truth.shape)}")
    prediction, reference = one_hot_maps(predicted, num_classes), one_hot_maps(truth, num_classes)
    class_dice, class_iou = class_overlap(prediction, reference)  # the same conventions as the mask-fidelity metric
    with warnings.catch_warnings():  # MONAI warns for every empty class (handled above) and about its own API
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        class_hd95 = compute_hausdorff_distance(prediction, reference, include_background=False, percentile=95).float()
    in_prediction, in_truth = prediction[:, 1:].flatten(2).any(-1), reference[:, 1:].flatten(2).any(-1)
    class_hd95 = torch.where(in_prediction & in_truth, class_hd95, torch.nan)
    present = in_prediction | in_truth
    missing_one_side = (in_prediction ^ in_truth).any(dim=1)
    hd95 = torch.where(present, class_hd95, 0.0).sum(1) / present.sum(1).clamp(min=1)
    hd95 = torch.where(missing_one_side | ~present.any(dim=1), torch.nan, hd95)
    return SegmentationScores(class_dice.mean(1), class_iou.mean(1), hd95, class_dice, class_iou, class_hd95)


def _mean_std(values: torch.Tensor) -> tuple[float | None, float | None]:
    finite = values[torch.isfinite(values)].double()
    if finite.numel() == 0:
        return None, None
    return float(finite.mean()), float(finite.std(unbiased=False))


def _optional(value: torch.Tensor) -> float | None:
    return float(value) if torch.isfinite(value) else None


def summarize_scores(scores: SegmentationScores, stems: list[str]) -> dict[str, Any]:
    """A test set's block of results.json: mean and std over images (population std), undefined HD95 counted,
    per foreground class id, and one row per image."""

    def block(dice: torch.Tensor, iou: torch.Tensor, hd95: torch.Tensor) -> dict[str, Any]:
        (dice_mean, dice_std), (iou_mean, iou_std), (hd_mean, hd_std) = _mean_std(dice), _mean_std(iou), _mean_std(hd95)
        return {"dice": dice_mean, "dice_std": dice_std, "iou": iou_mean, "iou_std": iou_std, "hd95": hd_mean,
                "hd95_std": hd_std, "hd95_undefined": int((~torch.isfinite(hd95)).sum())}

    classes = scores.class_dice.shape[1]
    rows = [
        {"stem": stem, "dice": float(scores.dice[i]), "iou": float(scores.iou[i]), "hd95": _optional(scores.hd95[i]),
         "class_dice": [float(v) for v in scores.class_dice[i]], "class_iou": [float(v) for v in scores.class_iou[i]],
         "class_hd95": [_optional(v) for v in scores.class_hd95[i]]}
        for i, stem in enumerate(stems)
    ]
    return {
        "count": len(scores), **block(scores.dice, scores.iou, scores.hd95),
        "per_class": {str(c + 1): block(scores.class_dice[:, c], scores.class_iou[:, c], scores.class_hd95[:, c]) for c in range(classes)},
        "per_image": rows,
    }


def region_masks(labels: np.ndarray | torch.Tensor, regions: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Binary maps of unions of class ids, e.g. Drishti-GS's disc = {1, 2} and cup = {2}."""
    labels = torch.as_tensor(np.asarray(labels)).long()
    return {name: torch.isin(labels, torch.tensor(ids)).long() for name, ids in regions.items()}
