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
# From benchmarks/target_gain.py's report (docs/benchmarks.md, "Target gain", 2026-12-07): 7 arms (FDA x3, histogram
# matching, photometric, aligned generation, aligned translation s 0.5) of Kvasir-SEG -> CVC-ClinicDB, 900 real
# pairs, 3 paired seeds each. Every one of them lost to the real pairs alone, so the scores rank how little a set
# costs, not a gain; the advice says so. To be measured again as the plan's other arms and the fundus shift land.
_WHERE = "Kvasir-SEG -> CVC-ClinicDB, 7 arms, 3 seeds each; all 7 were below the real pairs alone"
EVIDENCE: tuple[Evidence, ...] = (
    Evidence("reward_mmd", "the reward MMD to the references", 0.857, 7, _WHERE),
    Evidence("kid_references", "KID to the references", 0.714, 7, _WHERE),
    Evidence("mask_fidelity", "mask fidelity", 0.714, 7, _WHERE),
)
BENCHMARK = "docs/benchmarks.md#target-gain-issue-17"


def _value(entry: dict[str, Any], score: str) -> float:
    if score == "mask_fidelity":
        fidelity = entry.get("mask_fidelity") or {}
        return float(fidelity.get("dice", math.nan))
    return float(entry.get(score, math.nan))


def advise(report: dict[str, Any], evidence: tuple[Evidence, ...] = EVIDENCE) -> list[str]:
    """Lines of advice for a report with two or more sets (none for one set: there is nothing to choose)."""
    models = {name: entry for name, entry in report.get("models", {}).items() if entry.get("exported", True)}
    if len(models) < 2:
        return []
    check = ("Only a segmenter trained with and without the pairs and scored on a few labelled target images shows a "
             "gain: alignflow evaluate-segmentation.")
    if not evidence:
        return [f"No advice yet: which label-free score predicts a segmenter's gain has not been measured ({BENCHMARK}). {check}"]
    best = max(evidence, key=lambda item: item.rho)
    measured = f"on our benchmarks {best.label} ranked {best.arms} ways of adding pairs by their gain with Spearman rho {best.rho:+.2f} ({best.where}; {BENCHMARK})"
    if best.rho < TRUSTED_RHO:
        return [f"No label-free score predicted the gain well enough to choose by it: {measured}, the best of "
                f"{len(evidence)} scores. {check}"]
    values = {name: _value(entry, best.score) for name, entry in models.items()}
    usable = {name: value for name, value in values.items() if not math.isnan(value)}
    if len(usable) < 2:
        return [f"{best.label} is missing for these sets; {check}"]
    ranked = sorted(usable, key=lambda name: usable[name], reverse=not LOWER_IS_BETTER[best.score])
    return [f"Advice: try {ranked[0]} first; by {best.label}: " + ", ".join(f"{name} {usable[name]:.4f}" for name in ranked) + ".",
            f"Why this score: {measured}. {check}"]
