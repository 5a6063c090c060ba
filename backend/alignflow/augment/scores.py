"""The label-free scores of a set of new images, the ones a user can compute without target labels.

Each set ``augment`` makes gets: KID to the target images (to the references when no separate target folder is
given), KID to the references alone, and the reward MMD to the references (stage 2's L_A: EfficientNet-Lite0
features, the unbiased polynomial-kernel MMD). Which of them predicts a segmenter's gain on the target is measured
in docs/benchmarks.md ("Target gain") and turned into advice by ``augment.advice``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from alignflow.data import load_reference_images


class SetScorer:
    """Scores sets of images [N, 3, R, R] in [0, 1] against fixed target and reference images (features once)."""

    def __init__(self, target_paths: list[Path], reference_paths: list[Path], resolution: int, subset_size: int,
                 device: torch.device):
        from alignflow.metrics.kid import KernelInceptionDistanceTo
        from alignflow.models.feature_encoders import build_feature_encoder
        from alignflow.rewards.alignment import AlignmentReward

        references = load_reference_images(reference_paths, resolution)
        self.separate_target = list(target_paths) != list(reference_paths)
        target = load_reference_images(target_paths, resolution) if self.separate_target else references
        self.kid_to_target = KernelInceptionDistanceTo(target, subset_size, device=device)
        self.kid_to_references = (KernelInceptionDistanceTo(references, len(references), device=device)
                                  if self.separate_target else self.kid_to_target)
        self.reward = AlignmentReward(build_feature_encoder(device=device), references.to(device)).eval()
        self.device = device

    def __call__(self, images: torch.Tensor) -> dict[str, Any]:
        kid, kid_std = _kid(self.kid_to_target, images)
        scores: dict[str, Any] = {"kid": kid, "kid_std": kid_std,
                                  "subset_size": min(len(images), self.kid_to_target.subset_size)}
        scores["kid_references"], scores["kid_references_std"] = (_kid(self.kid_to_references, images) if self.separate_target
                                                                  else (kid, kid_std))
        with torch.no_grad():
            scores["reward_mmd"] = float(self.reward(images.to(self.device))) if len(images) >= 2 else math.nan
        return scores


def _kid(metric: Any, images: torch.Tensor) -> tuple[float, float]:
    subset = min(len(images), metric.subset_size)
    return metric(images, subset) if subset >= 2 else (math.nan, math.nan)
