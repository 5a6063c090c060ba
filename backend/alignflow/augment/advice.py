"""Which of a job's sets to trust when the target has no labels: the report's advice.

A user holds ~10 unlabelled target images, so the only scores ``augment`` can rank its sets by are label-free (KID
to the references, the reward MMD to the references, mask fidelity). Whether any of them ranks methods the way a
segmenter's gain on the target does is an empirical question; ``EVIDENCE`` records the answer of our benchmarks
(docs/benchmarks.md, "Target gain": Spearman correlation of each score with the downstream gain over every arm
measured, signs set so that a positive rho means "a better score, a larger gain"). The advice ranks the job's sets
by the score with the highest rho and says how far that score can be trusted; below ``TRUSTED_RHO`` it says that
none of them predicted the gain and that only a few labelled target images can decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Evidence:
    score: str  # the report field: "kid_references", "reward_mmd" or "mask_fidelity"
    label: str
    rho: float  # Spearman correlation with the downstream gain (sign: better score, larger gain)
    arms: int  # how many benchmark arms it was measured over
    where: str  # the benchmark and regime


TRUSTED_RHO = 0.6
LOWER_IS_BETTER = {"kid_references": True, "reward_mmd": True, "mask_fidelity": False}
# From benchmarks/target_gain.py's report (docs/benchmarks.md, "Target gain", 2026-12-07): rho within each stratum (a
# shift's regime), then the mean weighted by arms. Kvasir-SEG -> CVC-ClinicDB with 900 real pairs: 10 arms (FDA x3,
# histogram matching, photometric, aligned generation, translation s 0.5 from three generators, translation + FDA),
# 3 paired seeds, every arm below real only; with 100 real pairs: 14 arms (those but the combined one, translation
# s 0.3 / 0.7, stage-1 generation, generation and translation from a generator trained on the 100 pairs), 5 paired seeds, where the
# reference-based scores ranked well. Drishti-GS -> DRIONS-DB: the 10 arms of the first, 3-5 paired seeds, FDA best.
# Scores that led on the polyp shift pointed the wrong way on the fundus one, so none is trusted; the advice says so.
_WHERE = ("rho within each of three shift/regime strata, weighted mean: Kvasir-SEG -> CVC-ClinicDB with 900 pairs {full:+.2f}, "
          "with 100 pairs {lim:+.2f}, Drishti-GS -> DRIONS-DB {fundus:+.2f}; 34 arms")
EVIDENCE: tuple[Evidence, ...] = (
    Evidence("kid_references", "KID to the references", 0.548, 34, _WHERE.format(full=0.588, lim=0.793, fundus=0.164)),
    Evidence("reward_mmd", "the reward MMD to the references", 0.400, 34, _WHERE.format(full=0.624, lim=0.763, fundus=-0.333)),
    Evidence("mask_fidelity", "mask fidelity", 0.298, 34, _WHERE.format(full=0.758, lim=0.437, fundus=-0.358)),
)
BENCHMARK = "docs/benchmarks.md#target-gain-issue-17"
# What labelled target images decide instead (benchmarks/target_gain.py ``labelled_check``, 2026-12-08): random sets of
# 30 CVC-ClinicDB test images (drawn across its 29 sequences) with 3 paired judge runs each, choosing among the pools of four generators trained on
# the same 100 polyp pairs, lost 0.005 Dice on average against the best one; a random choice lost 0.015 and the
# lowest KID to the references 0.024 (it picked the second worst).
LABELLED_CHECK = ("alignflow evaluate-segmentation --paired-runs 3 --test target=LABELLED: on our polyp benchmark 30 labelled "
                  "target images from many recordings and 3 paired runs chose among four trained generators within 0.005 "
                  "Dice of the best, a random choice within 0.015 (30 consecutive frames of one recording: 0.011)")
HOW_TO_GET = {"mask_fidelity": " (it needs a benchmark evaluator: alignflow train-evaluator, then augment --evaluator)"}


def _value(entry: dict[str, Any], score: str) -> float:
    if score == "mask_fidelity":
        fidelity = entry.get("mask_fidelity") or {}
        return float(fidelity.get("dice", math.nan))
    return float(entry.get(score, math.nan))


def advise(report: dict[str, Any], evidence: tuple[Evidence, ...] = EVIDENCE) -> list[str]:
    """Lines of advice for a report with two or more sets (none for one set: there is nothing to choose). The sets are
    ranked by the most predictive score the report holds (mask fidelity needs ``--evaluator``); where a better one
    is missing, the advice says which and how to get it."""
    models = {name: entry for name, entry in report.get("models", {}).items() if entry.get("exported", True)}
    if len(models) < 2:
        return []
    check = ("Only a segmenter trained with and without the pairs and scored on a few labelled target images shows a "
             f"gain: {LABELLED_CHECK} ({BENCHMARK}).")
    if not evidence:
        return [f"No advice yet: which label-free score predicts a segmenter's gain has not been measured ({BENCHMARK}). {check}"]
    ordered = sorted(evidence, key=lambda item: item.rho, reverse=True)

    def measured(item: Evidence) -> str:
        return f"on our benchmarks {item.label} ranked {item.arms} ways of adding pairs by their gain with Spearman rho {item.rho:+.2f} ({item.where}; {BENCHMARK})"

    if ordered[0].rho < TRUSTED_RHO:
        return [f"No label-free score predicted the gain well enough to choose by it: {measured(ordered[0])}, the best of "
                f"{len(evidence)} scores. {check}"]
    held = {item.score: values for item in ordered if len(values := _values(models, item.score)) >= 2}
    trusted = [item for item in ordered if item.rho >= TRUSTED_RHO]
    best = next((item for item in trusted if item.score in held), None)
    if best is None:
        trusted_names = ", ".join(f"{item.label} (rho {item.rho:+.2f})" for item in trusted)
        return [f"No trusted label-free score is in this report: our benchmarks trust only {trusted_names}"
                f"{HOW_TO_GET.get(trusted[0].score, '')}. {check}"]
    missing = [item for item in trusted if item.score not in held][:1]
    hint = ""
    if missing and missing[0].rho > best.rho:
        label = missing[0].label[:1].upper() + missing[0].label[1:]  # str.capitalize would lower "MMD"
        hint = f" {label} predicted better and is missing from this report{HOW_TO_GET.get(missing[0].score, '')}."
    usable = held[best.score]
    ranked = sorted(usable, key=lambda name: usable[name], reverse=not LOWER_IS_BETTER[best.score])
    return [f"Advice: try {ranked[0]} first; by {best.label}: " + ", ".join(f"{name} {usable[name]:.4f}" for name in ranked) + ".",
            f"Why this score: {measured(best)}.{hint} {check}"]


def _values(models: dict[str, dict[str, Any]], score: str) -> dict[str, float]:
    values = {name: _value(entry, score) for name, entry in models.items()}
    return {name: value for name, value in values.items() if not math.isnan(value)}
