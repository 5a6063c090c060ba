"""Target gain (issue 17): a downstream judge precise enough to see +0.035 mDice, and every augmentation method raced
on it.

Source Kvasir-SEG, target CVC-ClinicDB, the splits of ``kvasir_to_clinicdb.py`` (as ``polyp_shift.py``: 900 Kvasir
training pairs, 100 held out; ClinicDB frames 1-306 = reference pool, 307-612 = test). Two regimes: all 900 real
pairs ("full") and the first 100 of them ("lim", data-limited).

The judge (docs/benchmarks.md, "Target gain (issue 17)"): a small MONAI UNet at 64 px, AdamW, warm-up + cosine
learning rate, EMA of the weights, paired batches (each seed fixes the initial weights, the data order and the
flips across arms; the synthetic quarter of each batch is the only difference), 5 seeds. Its number of steps is
fixed by a rule on real-only learning curves on held-out *Kvasir* (the source), before any arm is scored on the
target: see :func:`stopping_rule`.

Every task writes WORK/<task>/done.json (or failed.json) and is skipped when that exists; the scheduler runs the
first ready task in priority order, then re-executes itself, so the plan (this file) and the engine are read
afresh before every task: stop it at any time and start it again with the same command.

    OMP_NUM_THREADS=1 ALIGNFLOW_SHARED=../shared ALIGNFLOW_WEIGHTS_DIR=../shared/weights \\
        .venv/bin/python benchmarks/target_gain.py --work ../helpers/exp/target_gain [--report-only]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from polyp_shift import _references, _splits, align, train_segmenter_for, train_stage1  # noqa: E402

# ------------------------------------------------------------------------------------------------------ the judge
JUDGE_RESOLUTION = 64
JUDGE_UNET = {"channels": [16, 32, 64, 128], "num_res_units": 1}  # 0.2 M parameters, ~0.14 s per step of 16 here
JUDGE = dict(model="unet", model_options=JUDGE_UNET, batch_size=16, resolution=JUDGE_RESOLUTION, warmup_steps=100,
             ema_decay=0.995, paired_batches=True, device="cpu", checkpoint_every=250, preview_every=100_000, log_every=50)
SHARE = 0.25  # a quarter of every batch from the arm's pairs, as in polyp_shift.py
SEEDS = (0, 1, 2, 3, 4)
CURVE_SEEDS = (0, 1)
CURVE_STEPS = {"full": 4000, "lim": 3000}
VALIDATE_EVERY = 200
LIMITED_PAIRS = 100
# The stopping rule, written down before any run (docs/benchmarks.md): P = the first validation step at which the
# seed-mean real-only curve (constant learning rate after warm-up, EMA weights, held-out Kvasir) is within
# PLATEAU_TOLERANCE of its maximum; every arm then trains S = P rounded up to a multiple of ROUND_TO (at least
# MIN_STEPS) steps with a cosine decay over S, and is scored once, at the end.
PLATEAU_TOLERANCE = 0.01
ROUND_TO = 500
MIN_STEPS = 1000
TARGET_GAIN = 0.035
# ------------------------------------------------------------------------------------------------------- the arms
SYNTHETIC_PAIRS = 300  # per arm and regime: full = one copy of a fixed 300 of the 900 training pairs (polyp_shift's
COPIES = {"full": 1, "lim": 3}  # subset); lim = three copies (seeds) of each of its 100 pairs
REFERENCES = "r10s0"  # the 10 ClinicDB pool images of polyp_shift's aligned arm (10 random ones, seed 0)
STAGE1 = "stage1"
ALIGNED = "align_r10s0B"  # stage 2 with polyp_shift's chosen settings (variant B: t_is 5, lr 1e-4), from STAGE1
TRANSLATION_STAGE2 = "align_r10s0B_tr05"  # the same, in translation mode at s = 0.5
STRENGTHS = (0.3, 0.5, 0.7)
# arm -> how its pairs are made (``augment.methods``; generators by task name). Ordered by cost.
CHEAP_ARMS: dict[str, dict[str, Any]] = {
    "fda01": {"method": "fda", "beta": 0.01}, "fda05": {"method": "fda", "beta": 0.05}, "fda09": {"method": "fda", "beta": 0.09},
    "hist": {"method": "histogram"}, "photo": {"method": "photometric"},
}
GENERATIVE_ARMS: dict[str, dict[str, Any]] = {
    "gen_aligned": {"method": "generate", "generator": ALIGNED},
    **{f"tr_aligned_s{round(s * 10):02d}": {"method": "translate", "generator": ALIGNED, "strength": s} for s in STRENGTHS},
    **{f"tr_stage1_s{round(s * 10):02d}": {"method": "translate", "generator": STAGE1, "strength": s} for s in STRENGTHS},
    "tr_trstage2_s05": {"method": "translate", "generator": TRANSLATION_STAGE2, "strength": 0.5},
}
ENGINE_METHODS = "backend/alignflow/augment/methods.py"


@dataclass
class Task:
    name: str
    run: Callable[[Path, dict], dict]
    deps: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    ready: Callable[[], bool] = lambda: True  # besides its dependencies: e.g. the engine code it needs has landed


def _engine_methods_committed() -> bool:
    """The augmentation methods are built by another session: their tasks wait until the module is committed."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    return subprocess.run(["git", "ls-files", "--error-unmatch", ENGINE_METHODS], cwd=root, capture_output=True).returncode == 0


def _done(work: Path, name: str) -> dict | None:
    path = work / name / "done.json"
    return json.loads(path.read_text()) if path.exists() else None


def _train_folder(work: Path, regime: str) -> Path:
    """The real training pairs of a regime: all 900, or the first 100 (sorted by name) linked into their own folder."""
    from kvasir_to_clinicdb import link_split

    from alignflow.data import scan_dataset

    train = _splits(work)["train"]
    if regime == "full":
        return train
    return link_split(scan_dataset(train).pairs[:LIMITED_PAIRS], work / f"kvasir_train{LIMITED_PAIRS}")


# ------------------------------------------------------------------------------------------------------------ tasks

def curve(work: Path, params: dict) -> dict:
    """A real-only learning curve on held-out Kvasir (constant lr after warm-up, EMA); the target is not scored."""
    from alignflow.downstream import DownstreamConfig, evaluate_segmentation

    splits = _splits(work)
    held_out = {"kvasir_held_out": str(splits["held_out"])}
    config = DownstreamConfig(train=str(_train_folder(work, params["regime"])), test=held_out, validation=held_out,
                              validate_every=VALIDATE_EVERY, steps=CURVE_STEPS[params["regime"]], lr_schedule="constant",
                              seed=params["seed"], out=str(work / params["name"] / "run"), **JUDGE)
    results = evaluate_segmentation(config, resume=True)
    return {"curve": results["curve"], "train_seconds": results["train_seconds"]}


def stopping_rule(work: Path, params: dict) -> dict:
    """The number of steps of every arm of a regime, from its real-only curves (see PLATEAU_TOLERANCE)."""
    import numpy as np

    curves = [_done(work, f"curve_{params['regime']}_s{seed}")["curve"] for seed in CURVE_SEEDS]
    steps = [row["step"] for row in curves[0]]
    mean = np.mean([[row["kvasir_held_out"] for row in c] for c in curves], axis=0)
    plateau = steps[int(np.argmax(mean >= mean.max() - PLATEAU_TOLERANCE))]
    chosen = max(MIN_STEPS, int(math.ceil(plateau / ROUND_TO) * ROUND_TO))
    return {"plateau_step": plateau, "steps": chosen, "curve_max": float(mean.max()), "curve_max_step": steps[int(np.argmax(mean))],
            "mean_curve": {str(s): float(v) for s, v in zip(steps, mean)}, "plateaued": bool(steps[int(np.argmax(mean))] < steps[-1])}


def downstream(work: Path, params: dict) -> dict:
    """One seed of one arm: the judge trained for the regime's rule steps, scored on ClinicDB test and held-out Kvasir."""
    from alignflow.downstream import DownstreamConfig, evaluate_segmentation

    splits = _splits(work)
    synthetic = str(work / params["synthetic"] / "pairs") if params.get("synthetic") else None
    config = DownstreamConfig(train=str(_train_folder(work, params["regime"])), synthetic=synthetic,
                              synthetic_share=SHARE if synthetic else None,
                              test={"clinicdb_test": str(splits["test_pairs"]), "kvasir_held_out": str(splits["held_out"])},
                              steps=_done(work, f"rule_{params['regime']}")["steps"], lr_schedule="cosine", seed=params["seed"],
                              out=str(work / params["name"] / "run"), **JUDGE)
    results = evaluate_segmentation(config, resume=True)
    return {name: {key: scores[key] for key in ("dice", "dice_std", "iou", "hd95")} for name, scores in results["test"].items()} | {
        "train_seconds": results["train_seconds"], "steps": config.steps}


def _arm_spec(arm: str) -> dict[str, Any]:
    return {**CHEAP_ARMS, **GENERATIVE_ARMS}[arm]


def _make_pairs(work: Path, arm: str, pairs: list, out: Path, seed: int):
    """The arm's pairs for these real source pairs (``augment.methods``), written to ``out`` (all or nothing)."""
    from alignflow.augment.methods import transform_pairs, translate_pairs
    from alignflow.generator.pairs import generate_pairs
    from alignflow.generator.sampling import load_generator

    spec = _arm_spec(arm)
    if spec["method"] in ("fda", "histogram", "photometric"):
        return transform_pairs(spec["method"], pairs, out, references=_references(work, REFERENCES), beta=spec.get("beta", 0.05),
                               seed=seed)
    import torch

    generator = load_generator(work / spec["generator"] / "generator", torch.device("cpu"))
    if spec["method"] == "translate":
        return translate_pairs(generator, pairs, out, strength=spec["strength"], seed=seed)
    return generate_pairs(generator, [pair.mask for pair in pairs], out, stems=[pair.stem for pair in pairs], seed=seed)


def _training_subset(work: Path, regime: str) -> list:
    """The real pairs an arm's synthetic pairs are made from: polyp_shift's fixed 300 of 900, or all 100."""
    from alignflow.data import scan_dataset, split_indices

    pairs = scan_dataset(_train_folder(work, regime)).pairs
    if regime == "lim":
        return pairs
    return [pairs[int(i)] for i in sorted(split_indices(len(pairs), [SYNTHETIC_PAIRS], 1)[0])]


def synthesize(work: Path, params: dict) -> dict:
    """WORK/<task>/pairs: the arm's 300 pairs for a regime (lim: three copies, seeds 1000, 2000, 3000, stems c<k>_...)."""
    regime, arm, folder = params["regime"], params["arm"], work / params["name"]
    pairs = _training_subset(work, regime)
    if COPIES[regime] == 1:
        if not (folder / "pairs" / "manifest.json").exists():
            _make_pairs(work, arm, pairs, folder / "pairs", seed=1000)
        return {"pairs": len(pairs), "arm": _arm_spec(arm)}
    for copy in range(COPIES[regime]):
        out = folder / f"copy{copy}"
        if not (out / "manifest.json").exists():  # a finished copy is kept when the task is resumed
            _make_pairs(work, arm, pairs, out, seed=1000 * (copy + 1))
        for sub in ("images", "masks"):
            (folder / "pairs" / sub).mkdir(parents=True, exist_ok=True)
            for path in sorted((out / sub).iterdir()):
                link = folder / "pairs" / sub / f"c{copy}_{path.name}"
                if not link.exists():
                    link.symlink_to(path.resolve())
    return {"pairs": len(pairs) * COPIES[regime], "arm": _arm_spec(arm)}


def score(work: Path, params: dict) -> dict:
    """The arm's pairs for the 100 held-out Kvasir pairs: KID to the ClinicDB test set and to the 10 references alone,
    the reward MMD to the references (stage 2's L_A: EfficientNet-Lite0 features, unbiased polynomial MMD), and mask
    fidelity (the benchmark evaluator's Dice on the images against their masks) beside its ceiling (its Dice on the
    real held-out images). ``arm`` "real": the held-out images themselves."""
    import torch

    from alignflow.data import list_images, load_pairs, load_reference_images, scan_dataset
    from alignflow.fidelity.metric import fidelity_report, score_generated_folder, score_real_dataset
    from alignflow.fidelity.segmenter import load_segmenter
    from alignflow.metrics.kid import KernelInceptionDistanceTo
    from alignflow.models.feature_encoders import build_feature_encoder
    from alignflow.rewards.alignment import AlignmentReward

    splits, arm, folder = _splits(work), params["arm"], work / params["name"]
    held_out = scan_dataset(splits["held_out"])
    if arm == "real":
        images, _ = load_pairs(held_out, 128)
        pairs_folder = splits["held_out"]
    else:
        if not (folder / "pairs" / "manifest.json").exists():
            _make_pairs(work, arm, held_out.pairs, folder / "pairs", seed=0)
        pairs_folder = folder / "pairs"
        images, _ = load_pairs(scan_dataset(pairs_folder), 128)
    references = load_reference_images(_references(work, REFERENCES), 128)
    test = load_reference_images(list_images(splits["test"]), 128)
    result: dict[str, Any] = {}
    result["kid_test"], result["kid_test_std"] = KernelInceptionDistanceTo(test, subset_size=100)(images)
    result["kid_references"], result["kid_references_std"] = KernelInceptionDistanceTo(references, subset_size=len(references))(images)
    with torch.no_grad():
        result["reward_mmd"] = float(AlignmentReward(build_feature_encoder(), references)(images))
    evaluator = load_segmenter(work / "evaluator" / "segmenter")
    fidelity = fidelity_report(evaluator, score_generated_folder(evaluator, pairs_folder / "images", pairs_folder / "masks"),
                               score_real_dataset(evaluator, splits["held_out"]), str(splits["held_out"]))
    result["fidelity"], result["fidelity_ceiling"] = fidelity["dice"], fidelity["ceiling"]["dice"]
    return result


def align_translation(work: Path, params: dict) -> dict:
    """Stage 2 in translation mode (issue 17 item 2): polyp_shift's aligned run with ``translation_strength``."""
    return align(work, {**params, "refs": REFERENCES, "variant": "B", "translation_strength": params["strength"]})


# --------------------------------------------------------------------------------------------------------- the plan

def _arm_tasks(regime: str, arm: str, seeds: tuple[int, ...] = SEEDS) -> list[Task]:
    """The arm's synthetic pairs for the regime (unless real only), then its downstream runs for these seeds."""
    synthetic = None if arm == "real" else f"synth_{regime}_{arm}"
    deps = [f"rule_{regime}"] + ([synthetic] if synthetic else [])
    return [Task(f"down_{regime}_{arm}_s{seed}", downstream, deps, {"regime": regime, "seed": seed, "synthetic": synthetic})
            for seed in seeds]


def _synth_tasks(regime: str, arms: dict[str, dict[str, Any]]) -> list[Task]:
    return [Task(f"synth_{regime}_{arm}", synthesize, _generator_deps(spec), {"regime": regime, "arm": arm},
                 ready=_engine_methods_committed) for arm, spec in arms.items()]


def _generator_deps(spec: dict[str, Any]) -> list[str]:
    return [spec["generator"]] if "generator" in spec else []


def _score_tasks(arms: dict[str, dict[str, Any]]) -> list[Task]:
    return [Task(f"score_{arm}", score, ["evaluator", *_generator_deps(spec)], {"arm": arm}, ready=_engine_methods_committed)
            for arm, spec in arms.items()]


def _breadth_first(regime: str, arms: list[str], seeds: tuple[int, ...]) -> list[Task]:
    """Downstream runs seed by seed across arms: with paired seeds, three seeds of every arm say more than five of a few."""
    return [task for seed in seeds for arm in arms for task in _arm_tasks(regime, arm, (seed,))]


def plan() -> list[Task]:
    """All tasks in priority order (the scheduler runs the first ready one):
    1. the judge's calibration (curves, rule, real only over 5 seeds) for both regimes;
    2. the cheap arms (no generator): their pairs, scores, and downstream runs, seeds 0-2 first, full regime first;
    3. the generators (stage 1, aligned, translation-mode stage 2), the generative arms likewise;
    4. seeds 3-4 of every arm.
    """
    tasks: list[Task] = []
    for regime in ("full", "lim"):
        tasks += [Task(f"curve_{regime}_s{seed}", curve, [], {"regime": regime, "seed": seed}) for seed in CURVE_SEEDS]
        tasks.append(Task(f"rule_{regime}", stopping_rule, [f"curve_{regime}_s{seed}" for seed in CURVE_SEEDS], {"regime": regime}))
        tasks += _arm_tasks(regime, "real")
    tasks.append(Task("evaluator", train_segmenter_for, params={"role": "evaluator"}))
    tasks.append(Task("score_real", score, ["evaluator"], {"arm": "real"}))
    for regime in ("full", "lim"):
        tasks += _synth_tasks(regime, CHEAP_ARMS)
        tasks += _breadth_first(regime, list(CHEAP_ARMS), SEEDS[:3])
    tasks += _score_tasks(CHEAP_ARMS)
    tasks += [Task(STAGE1, train_stage1), Task(ALIGNED, align, [STAGE1], {"refs": REFERENCES, "variant": "B"}),
              Task(TRANSLATION_STAGE2, align_translation, [STAGE1], {"strength": 0.5})]
    for regime in ("full", "lim"):
        tasks += _synth_tasks(regime, GENERATIVE_ARMS)
        tasks += _breadth_first(regime, list(GENERATIVE_ARMS), SEEDS[:3])
    tasks += _score_tasks(GENERATIVE_ARMS)
    for regime in ("full", "lim"):
        tasks += _breadth_first(regime, [*CHEAP_ARMS, *GENERATIVE_ARMS], SEEDS[3:])
    for task in tasks:
        task.params.setdefault("name", task.name)
    assert len({task.name for task in tasks}) == len(tasks), "task names must be unique"
    return tasks


# ---------------------------------------------------------------------------------------------------- the scheduler

def _failed(work: Path, name: str) -> bool:
    return (work / name / "failed.json").exists()


def _next_task(work: Path, only: list[str] | None, retry_failed: bool) -> Task | None:
    for task in plan():
        if only and not any(task.name.startswith(prefix) for prefix in only):
            continue
        if _done(work, task.name) or (_failed(work, task.name) and not retry_failed):
            continue
        if all(_done(work, dep) for dep in task.deps) and task.ready():
            return task
    return None


def _execute(work: Path, task: Task) -> bool:
    import torch

    torch.set_num_threads(1)
    folder = work / task.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "failed.json").unlink(missing_ok=True)
    print(f"[{time.strftime('%H:%M:%S')}] start {task.name}", flush=True)
    started = time.perf_counter()
    try:
        result = task.run(work, task.params)
    except Exception:  # one failed task must not stop the others; the report lists it
        (folder / "failed.json").write_text(json.dumps({"traceback": traceback.format_exc()}, indent=2))
        print(f"[{time.strftime('%H:%M:%S')}] FAILED {task.name}\n{traceback.format_exc()}", flush=True)
        return False
    result["task_seconds"] = time.perf_counter() - started
    (folder / "done.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"[{time.strftime('%H:%M:%S')}] done {task.name}: {result['task_seconds'] / 60:.1f} min", flush=True)
    return True


def run_plan(work: Path, only: list[str] | None, retry_failed: bool, once: bool) -> None:
    task = _next_task(work, only, retry_failed)
    if task is None:
        print("nothing left to run (finished, failed or waiting for dependencies)", flush=True)
        return
    _execute(work, task)
    if not once:  # the next task in a fresh process: this file and the engine are read again from disk
        argv = [arg for arg in sys.argv if arg != "--retry-failed"]
        os.execv(sys.executable, [sys.executable, *argv])


# ----------------------------------------------------------------------------------------------------- the report

def _seed_scores(work: Path, regime: str, arm: str, test: str = "clinicdb_test") -> dict[int, float]:
    runs = {seed: _done(work, f"down_{regime}_{arm}_s{seed}") for seed in SEEDS}
    return {seed: run[test]["dice"] for seed, run in runs.items() if run}


def seeds_needed(std: float, gain: float = TARGET_GAIN, paired: bool = True) -> int:
    """Seeds n for which ``gain`` is two standard errors of a difference of arm means: 2 sd sqrt(k / n) <= gain, with
    k = 1 for paired differences (``std`` is the std of the per-seed differences) and k = 2 for two independent arms
    (``std`` is one arm's seed std)."""
    return max(2, math.ceil((2.0 * std / gain) ** 2 * (1 if paired else 2)))


def report(work: Path) -> None:
    import numpy as np

    for regime in ("full", "lim"):
        rule = _done(work, f"rule_{regime}")
        print(f"\n## regime {regime}")
        for seed in CURVE_SEEDS:
            done = _done(work, f"curve_{regime}_s{seed}")
            if done:
                print(f"curve s{seed}: " + ", ".join(f"{row['step']}: {row['kvasir_held_out']:.3f}" for row in done["curve"]))
        if rule:
            print(f"rule: plateau at step {rule['plateau_step']} (max {rule['curve_max']:.3f} at {rule['curve_max_step']}, "
                  f"plateaued {rule['plateaued']}) -> {rule['steps']} steps per arm")
        scores = _seed_scores(work, regime, "real")
        if scores:
            values = np.array(list(scores.values()))
            std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            source = list(_seed_scores(work, regime, "real", "kvasir_held_out").values())
            print(f"real only: ClinicDB test mDice per seed {[round(v, 4) for v in values]}, mean {values.mean():.4f}, "
                  f"seed std {std:.4f} (sample), SE {std / math.sqrt(len(values)):.4f}; held-out Kvasir {np.mean(source):.4f}")
            if len(values) > 1:
                print(f"seeds for +{TARGET_GAIN} at 2 SE: unpaired {seeds_needed(std, paired=False)}, "
                      f"paired if the difference std equals the seed std {seeds_needed(std)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/target_gain")
    parser.add_argument("--only", nargs="*", help="run only tasks whose names start with these prefixes")
    parser.add_argument("--retry-failed", action="store_true", help="run failed tasks again (once)")
    parser.add_argument("--once", action="store_true", help="run one task and stop")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    work = Path(args.work)
    if not args.report_only:
        run_plan(work, args.only, args.retry_failed, args.once)
    report(work)


if __name__ == "__main__":
    main()
