"""Is a set of synthetic pairs worth adding? The paired comparison of docs/downstream.md ("Comparing arms"), as one
engine call: for each of ``runs`` seeds the segmenter is trained on the real pairs alone and on the real plus the
synthetic pairs, with that seed for both (with ``paired_batches`` the two share initial weights, the order of the
real pairs and the flips), and the gain is the mean of the per-seed differences with its standard error.

    OUT/seed<k>/real_only/        evaluate_segmentation's output folders (resumable, as every run)
    OUT/seed<k>/with_synthetic/
    OUT/comparison.json           per test set: each seed's Dice without and with, the mean gain, its SE and sd

One seed is not enough to decide: on the benchmarks (docs/benchmarks.md, "Target gain") one judge run moves by
0.03 Dice from seed to seed on 100 real polyp pairs, and the paired difference of two arms by 0.02.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from alignflow.atomic import atomic_write_json
from alignflow.downstream.config import DownstreamConfig
from alignflow.downstream.evaluate import evaluate_segmentation
from alignflow.errors import InputError
from alignflow.runs.events import Listener

COMPARISON_FILE = "comparison.json"
ARMS = ("real_only", "with_synthetic")
# The benchmarks' judge (benchmarks/target_gain.py; docs/benchmarks.md, "The judge"): a 0.2 M-parameter UNet, warm-up,
# an EMA of the weights, paired batches and test-time flips; on 100 real polyp pairs its per-seed paired difference
# of two arms varies by about 0.02 Dice, where one run of the default UNet without these varied by 0.05.
JUDGE_OPTIONS: dict[str, Any] = {"model": "unet", "model_options": {"channels": [16, 32, 64, 128], "num_res_units": 1},
                                 "batch_size": 16, "warmup_steps": 100, "ema_decay": 0.995, "paired_batches": True,
                                 "test_time_flips": True}


def _mean_se_sd(values: list[float]) -> tuple[float, float, float]:
    """Mean, its standard error and the sample sd (``runs`` >= 2, so both exist)."""
    sd = statistics.stdev(values)
    return statistics.fmean(values), sd / math.sqrt(len(values)), sd


def compare_with_synthetic(config: DownstreamConfig, runs: int, listeners: list[Listener] | None = None,
                           resume: bool = False) -> dict[str, Any]:
    """Engine API: ``config`` (its ``synthetic`` folders and share) against the same config without synthetic pairs,
    over the seeds ``config.seed`` ... ``config.seed + runs - 1``; returns (and writes to OUT/comparison.json) per
    test set the per-seed Dice of both arms and the paired gain: mean, standard error and sd over the seeds. Events
    reach ``listeners`` with ``run`` (0-based) and ``runs`` (2 x ``runs``: each seed trains both arms) added."""
    if not config.synthetic_folders:
        raise InputError("--synthetic", "the synthetic pairs to compare against real pairs alone", "none")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 2:
        raise InputError("--paired-runs", "an integer >= 2 (a standard error of the gain needs two seeds)", repr(runs))
    config.validate()
    out = Path(config.out)
    seeds = list(range(config.seed, config.seed + runs))
    total = len(seeds) * len(ARMS)
    per_seed: dict[str, dict[str, dict[int, float]]] = {}
    count: dict[str, int] = {}
    arms = {"real_only": replace(config, synthetic=None, synthetic_share=None, pretrain_synthetic_steps=0), "with_synthetic": config}
    for index, seed in enumerate(seeds):
        for offset, (arm, arm_config) in enumerate(arms.items()):
            run = len(ARMS) * index + offset
            relayed = [lambda event, listener=listener, run=run: listener({**event, "run": run, "runs": total})
                       for listener in listeners or []]
            results = evaluate_segmentation(replace(arm_config, seed=seed, out=str(out / f"seed{seed}" / arm)), relayed, resume)
            for name, block in results["test"].items():
                per_seed.setdefault(name, {arm_name: {} for arm_name in ARMS})[arm][seed] = block["dice"]
                count[name] = block["count"]
    comparison: dict[str, Any] = {"seeds": seeds, "synthetic": config.synthetic_folders, "synthetic_share": config.synthetic_share,
                                  "paired_batches": config.paired_batches, "test": {}}
    for name, dice in per_seed.items():
        differences = [dice["with_synthetic"][seed] - dice["real_only"][seed] for seed in seeds]
        gain, se, sd = _mean_se_sd(differences)
        comparison["test"][name] = {
            "count": count[name], "gain": gain, "gain_se": se, "gain_sd": sd,
            **{arm: {"dice": statistics.fmean(dice[arm].values()), "per_seed": [dice[arm][seed] for seed in seeds]} for arm in ARMS}}
    atomic_write_json(out / COMPARISON_FILE, comparison)
    return comparison


def describe_gain(name: str, block: dict[str, Any], runs: int) -> str:
    """One line for a test set of a comparison: both arms, the gain with its standard error, and whether it is
    more than two standard errors from zero."""
    gain, se = block["gain"], block["gain_se"]
    verdict = ("more than two standard errors above zero" if gain > 2 * se else
               "more than two standard errors below zero" if gain < -2 * se else "within two standard errors of zero: not shown")
    return (f"{name} ({block['count']} images, {runs} paired runs): Dice {block['real_only']['dice']:.3f} real only, "
            f"{block['with_synthetic']['dice']:.3f} with the synthetic pairs; gain {gain:+.3f} ± {se:.3f} ({verdict})")
