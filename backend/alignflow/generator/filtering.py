"""Fidelity filtering at generation: K candidate images per mask, keep the one the evaluator segments best.

The image counterpart of the best-of-K mask filter (``masks.synthesis.best_of_k``). Candidate j of mask i uses
seed ``seed + i + j * N`` (N masks), so candidate 0 is the image an unfiltered run gives and every candidate can
be regenerated alone from its recorded seed.

Scoring with the same segmenter that later measures fidelity inflates that measurement (the images were chosen by
it); filter with one segmenter and measure with another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from alignflow.errors import InputError
from alignflow.progress import ProgressCallback

GenerateFn = Callable[[torch.Tensor, Sequence[int]], torch.Tensor]  # (masks [N, R, R], seeds) -> images [N, 3, R, R]
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images, masks) -> per-image score [N], higher is better


@dataclass
class FilteredImages:
    """The kept image of each mask, its seed and score, and every candidate's seed and score."""

    images: torch.Tensor
    seeds: list[int]
    scores: torch.Tensor
    candidate_seeds: list[list[int]]
    candidate_scores: torch.Tensor  # [N, K]

    def manifest_rows(self, score_name: str = "fidelity_dice") -> list[dict[str, Any]]:
        """Per-image fields for the synthetic pairs' manifest."""
        return [{score_name: float(score), "candidate_seeds": seeds, f"candidate_{score_name}": [float(s) for s in scores]}
                for score, seeds, scores in zip(self.scores, self.candidate_seeds, self.candidate_scores)]


def candidate_seeds(count: int, candidates: int, seed: int = 0) -> list[list[int]]:
    """Distinct seeds [count][candidates]: candidate j of mask i is ``seed + i + j * count``."""
    check_candidates(candidates)
    return [[seed + i + j * count for j in range(candidates)] for i in range(count)]


def check_candidates(candidates: int) -> None:
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise InputError("--candidates", "an integer K >= 1 (candidate images per mask)", repr(candidates))


def best_of_candidates(generate: GenerateFn, score: ScoreFn, masks: torch.Tensor, candidates: int, seed: int = 0,
                       on_candidate: Callable[[int, int], None] | None = None) -> FilteredImages:
    """Generate ``candidates`` images per mask and keep the best-scoring one (the first among equals).

    Only the best image so far is kept per mask, so memory does not grow with K.
    """
    seeds = candidate_seeds(masks.shape[0], candidates, seed)
    best_images: torch.Tensor | None = None
    all_scores = []
    for j in range(candidates):
        images = generate(masks, [row[j] for row in seeds])
        scores = score(images, masks).float().cpu()
        if best_images is None:
            best_images = images.clone()
        else:
            better = scores > torch.stack(all_scores, dim=1).max(dim=1).values
            best_images[better] = images[better]
        all_scores.append(scores)
        if on_candidate is not None:
            on_candidate(j + 1, candidates)
    table = torch.stack(all_scores, dim=1)
    best = table.argmax(dim=1)  # first maximum, consistent with the strict ">" above
    return FilteredImages(best_images, [seeds[i][int(k)] for i, k in enumerate(best)], table.max(dim=1).values,
                          seeds, table)


@dataclass
class ScoredGeneration:
    """Images for masks, the seed of each, and per-image manifest fields (empty dicts without an evaluator)."""

    images: torch.Tensor
    seeds: list[int]
    rows: list[dict[str, Any]]
    scores: Any = None  # metric.FidelityScores of the kept images, when an evaluator scored them


def generate_with_fidelity(generator: Any, masks: torch.Tensor, *, evaluator: Any = None, candidates: int = 1,
                           seed: int = 0, on_progress: ProgressCallback | None = None,
                           **sampling: Any) -> ScoredGeneration:
    """``generation.generate_images`` for class-id masks, scored by ``evaluator`` (a LoadedSegmenter) when given.

    With ``candidates`` K > 1 the evaluator picks the best of K per mask (its Dice); the kept images' Dice and IoU
    and, with K > 1, every candidate's seed and Dice go into the rows for the manifest.
    """
    from alignflow.fidelity.metric import score_images
    from alignflow.generator.sampling import generate_images

    check_candidates(candidates)
    if candidates > 1 and evaluator is None:
        raise InputError("--evaluator", "an evaluator segmenter to score the candidates when --candidates > 1", "nothing")
    count = masks.shape[0]
    done_before = [0]

    def generate(chosen_masks: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        report = None if on_progress is None else (
            lambda stage, done, total: on_progress(stage, done_before[0] + done, count * candidates))
        return generate_images(generator, chosen_masks, seeds=seeds, on_progress=report, **sampling)

    def advance(finished: int, total: int) -> None:
        done_before[0] = finished * count

    if evaluator is None:
        seeds = [seed + i for i in range(count)]
        return ScoredGeneration(generate(masks, seeds), seeds, [{} for _ in range(count)])
    filtered = best_of_candidates(generate, lambda images, chosen: score_images(evaluator.model, images, chosen).dice,
                                  masks, candidates, seed, on_candidate=advance)
    scores = score_images(evaluator.model, filtered.images, masks)
    rows = [{"fidelity_dice": float(d), "fidelity_iou": float(i), "evaluator": str(evaluator.folder),
             "evaluator_kind": evaluator.kind} for d, i in zip(scores.dice, scores.iou)]
    if candidates > 1:
        rows = [{**row, "candidate_seeds": extra["candidate_seeds"], "candidate_fidelity_dice": extra["candidate_fidelity_dice"]}
                for row, extra in zip(rows, filtered.manifest_rows())]
    return ScoredGeneration(filtered.images, filtered.seeds, rows, scores)
