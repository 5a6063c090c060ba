"""The real-data domain-shift experiment: does AlignFlow's synthetic data make a segmenter better on the target?

Source Kvasir-SEG, target CVC-ClinicDB, the splits of ``kvasir_to_clinicdb.py`` (900 Kvasir training pairs, 100
held out; ClinicDB frames 1-306 = reference pool, 307-612 = test). One run answers three issues at once:
- issue 7: downstream UNets (3 seeds per arm) trained on real Kvasir alone or plus the synthetic pairs of the
  stage-1 generator, of generators aligned with 1, 5 and 10 references, and of the aligned generator on synthetic
  masks; target-test and source-test mDice / mIoU, and each generator's KID to the target test set;
- issue 9: stage 2 with the 10 references of ``advise-references`` against 10 random ones (three draws), KID;
- issue 10: mask fidelity of every generator (a benchmark evaluator's Dice on images generated from held-out
  masks, against its Dice on the real images = the ceiling), and the aligned generator with the mask-consistency
  reward L_M; the synthetic share of each batch (25 % / 50 %) and synthetic pre-training, for one generator.

Stage 2's settings are chosen first, on a validation set (the reference pool minus the references), between two
variants; never on the test set. Every task writes WORK/<task>/done.json and is skipped when that exists, so the
script can be stopped and re-run; tasks run in ``--workers`` processes of one thread each (2-core CPU).

    ALIGNFLOW_SHARED=../shared ALIGNFLOW_WEIGHTS_DIR=../shared/weights \\
        .venv/bin/python benchmarks/polyp_shift.py --work runs/exp [--report-only]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kvasir_to_clinicdb import prepare_splits  # noqa: E402

RESOLUTION = 128
STAGE1_STEPS = 3900
STAGE2_STEPS = 200
SYNTHETIC_PAIRS = 300  # per arm, generated from a fixed subset of the training masks (a quarter of each batch)
DOWNSTREAM_STEPS = 400
LONG_DOWNSTREAM_STEPS = 1200
FILTER_CANDIDATES = 4
FEEDBACK_TEMPERATURE = 0.5  # the paper gives lambda in (0, 1] and no value; 0.5 sharpens, untuned
FEEDBACK_ROWS = 4  # L_fb on 4 of each batch's 16 pairs (the real ones come first): 16 would cost ~16x the UNet step
SEEDS = (0, 1, 2)
# Two stage-2 settings, picked between on the validation KID: last session's best (t_is 10) and a gentler one that
# lets the reward reach earlier Euler steps at a lower learning rate (the texture hacking seen with t_is 18).
STAGE2_VARIANTS = {"A": {"t_is": 10, "lr": 3e-4}, "B": {"t_is": 5, "lr": 1e-4}}


@dataclass
class Task:
    name: str
    run: Callable[[Path, dict], dict]
    deps: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------- helpers

def _splits(work: Path) -> dict[str, Path]:
    splits = prepare_splits(work, 0)
    splits["test_pairs"] = splits["test"].parent
    splits["pool_pairs"] = splits["reference_pool"].parent
    return splits


def _done(work: Path, name: str) -> dict | None:
    path = work / name / "done.json"
    return json.loads(path.read_text()) if path.exists() else None


def _references(work: Path, spec: str) -> list[str]:
    """``r<k>s<seed>``: k random pool images drawn with the seed; ``adv10``: the advisor's 10."""
    from alignflow.data.references import select_references

    splits = _splits(work)
    if spec.startswith("adv"):
        return _done(work, "advise")["references"]
    k, seed = spec[1:].split("s")
    return [str(p) for p in select_references(splits["reference_pool"], int(k), int(seed))]


def _chosen_variant(work: Path) -> dict:
    return _done(work, "choose")["params"]


def _generator_folder(work: Path, generator: str) -> Path:
    if generator.startswith("stage1"):
        return work / generator / "generator"
    return work / f"align_{generator}" / "generator"


def _held_out_masks(work: Path):
    from alignflow.data import load_masks, scan_dataset

    pairs = scan_dataset(_splits(work)["held_out"]).pairs
    return [pair.stem for pair in pairs], load_masks([pair.mask for pair in pairs], RESOLUTION)


def _generate(work: Path, params: dict, masks, seed: int):
    """The generator's images for ``masks``; with ``candidates`` K > 1 the best of K per mask by the reward segmenter.

    The filter uses the reward segmenter (first half of Kvasir, source only, photometric augmentation), never the
    benchmark evaluator, so that the fidelity reported for a filtered arm is not the score it was selected on.
    """
    import torch

    from alignflow.fidelity.segmenter import load_segmenter
    from alignflow.generator.filtering import generate_with_fidelity
    from alignflow.generator.sampling import generate_images, load_generator

    generator = load_generator(_generator_folder(work, params["generator"]), torch.device("cpu"))
    candidates = params.get("candidates", 1)
    if candidates == 1:
        return generate_images(generator, masks, seed=seed)
    scorer = load_segmenter(work / "reward_segmenter" / "segmenter")
    return generate_with_fidelity(generator, masks, evaluator=scorer, candidates=candidates, seed=seed).images


def _write_pairs(out: Path, stems: list[str], images, masks) -> None:
    from alignflow.data import to_uint8, write_image, write_mask

    for stem, image, mask in zip(stems, to_uint8(images), masks):
        write_image(out / "images" / f"{stem}.png", image)
        write_mask(out / "masks" / f"{stem}.png", mask.numpy().astype("uint8"))


# ------------------------------------------------------------------------------------------------------------ tasks

def train_stage1(work: Path, params: dict) -> dict:
    from alignflow.generator.config import TrainConfig
    from alignflow.generator.training import train

    source = params.get("source") or str(_splits(work)["train"])  # target_gain.py: the 100-pair regime's own generator
    config = TrainConfig(out=str(work / params["name"]), generator={"resolution": RESOLUTION}, source=source,
                         batch_size=8, device="cpu", seed=params.get("seed", 0), checkpoint_every=500, preview_every=500, log_every=50, steps=STAGE1_STEPS,
                         w_ar=params.get("w_ar", 0.0), flip_augment=params.get("flip_augment", False))
    train(config, resume=True)
    return json.loads((work / params["name"] / "summary.json").read_text())


def train_segmenter_for(work: Path, params: dict) -> dict:
    """The benchmark evaluator (Kvasir second half + ClinicDB pool) or the reward segmenter of L_M (first half)."""
    from alignflow.fidelity.training import EvaluatorTrainConfig, train_evaluator

    splits = _splits(work)
    role = params["role"]
    config = EvaluatorTrainConfig(source=str(splits["train"]), target=str(splits["pool_pairs"]) if role == "evaluator" else None,
                                  out=str(work / params["name"]), role=role, steps=420, batch_size=16, device="cpu")
    return {"folder": str(train_evaluator(config, resume=True))}


def advise(work: Path, params: dict) -> dict:
    from alignflow.advisor import advise_references

    splits = _splits(work)
    advice = advise_references(splits["reference_pool"], 10, source=splits["train"] / "images", resolution=RESOLUTION,
                               cache_dir=work / "feature_cache", out=work / "advise")
    return {"references": list(advice.references), "enough_k": advice.enough_k, "shift": advice.to_dict()["shift"]}


def align(work: Path, params: dict) -> dict:
    """Stage 2 from the stage-1 generator: ``params`` = references spec + variant (or the chosen one) + extras."""
    from alignflow.generator.config import TrainConfig
    from alignflow.generator.training import train

    variant = STAGE2_VARIANTS[params["variant"]] if "variant" in params else _chosen_variant(work)
    extra: dict[str, Any] = {}
    if params.get("w_mask"):
        extra = {"w_mask": params["w_mask"], "mask_segmenter": str(work / "reward_segmenter" / "segmenter")}
    if params.get("w_ar"):
        extra["w_ar"] = params["w_ar"]
    if params.get("translation_strength"):  # target_gain.py: stage 2 in translation mode (issue 17)
        extra["translation_strength"] = params["translation_strength"]
    if params.get("flip_augment"):  # target_gain.py: the 100-pair generator trained on flipped pairs
        extra["flip_augment"] = True
    config = TrainConfig(stage=2, source=params.get("source") or str(_splits(work)["train"]), out=str(work / params["name"]), init=str(work / params.get("init", "stage1") / "generator"),
                         references=_references(work, params["refs"]), steps=STAGE2_STEPS, batch_size=8, device="cpu", seed=params.get("seed", 0),
                         checkpoint_every=50, preview_every=100, log_every=10, w_align=1.0, **variant, **extra)
    train(config, resume=True)
    summary = json.loads((work / params["name"] / "summary.json").read_text())
    return {"variant": variant, "references": config.references, "seconds": summary["seconds"], **extra}


def score_generator(work: Path, params: dict) -> dict:
    """Images for the 100 held-out masks: KID to the ClinicDB test set and to the validation set, mask fidelity."""
    from alignflow.data import list_images, load_reference_images
    from alignflow.fidelity.metric import fidelity_report, score_generated_folder, score_real_dataset
    from alignflow.fidelity.segmenter import load_segmenter
    from alignflow.metrics.kid import KernelInceptionDistanceTo

    splits = _splits(work)
    out = work / params["name"]
    stems, masks = _held_out_masks(work)
    if params["generator"] == "real":
        from alignflow.data import load_pairs, scan_dataset
        images, _ = load_pairs(scan_dataset(splits["held_out"]), RESOLUTION)
    else:
        images = _generate(work, params, masks, seed=0)
    _write_pairs(out, stems, images, masks)
    result: dict[str, Any] = {}
    test = load_reference_images(list_images(splits["test"]), RESOLUTION)
    result["kid_test"], result["kid_test_std"] = KernelInceptionDistanceTo(test, subset_size=100)(images)
    if params["generator"] not in ("real", "stage1", "stage1_ar"):
        used = set(_done(work, f"align_{params['generator']}")["references"])
        validation = [p for p in list_images(splits["reference_pool"]) if str(p) not in used]
    else:
        validation = list_images(splits["reference_pool"])
    result["kid_validation"], _ = KernelInceptionDistanceTo(load_reference_images(validation, RESOLUTION), subset_size=100)(images)
    evaluator = load_segmenter(work / "evaluator" / "segmenter")
    fidelity = fidelity_report(evaluator, score_generated_folder(evaluator, out / "images", out / "masks"),
                               score_real_dataset(evaluator, splits["held_out"]), str(splits["held_out"]))
    result["fidelity"] = {key: fidelity[key] for key in ("dice", "iou", "ratio_to_ceiling")}
    result["fidelity_ceiling"] = fidelity["ceiling"]["dice"]
    return result


def choose_stage2(work: Path, params: dict) -> dict:
    """The stage-2 variant with the lower KID to the validation set (the pool minus its references)."""
    scores = {name: _done(work, f"score_r10s0{name}")["kid_validation"] for name in STAGE2_VARIANTS}
    best = min(scores, key=scores.get)
    return {"variant": best, "params": STAGE2_VARIANTS[best], "validation_kid": scores}


def synthesize_pairs(work: Path, params: dict) -> dict:
    """``SYNTHETIC_PAIRS`` synthetic pairs: a fixed subset of training masks (or synthetic masks) -> generator images."""
    from alignflow.data import load_masks, scan_dataset, split_indices

    if params.get("masks") == "synthetic":
        mask_files = sorted((work / "synthetic_masks" / "masks").iterdir())[:SYNTHETIC_PAIRS]
        stems = [f"synmask_{path.stem}" for path in mask_files]
    else:
        pairs = scan_dataset(_splits(work)["train"]).pairs
        chosen = sorted(int(i) for i in split_indices(len(pairs), [SYNTHETIC_PAIRS], 1)[0])
        mask_files, stems = [pairs[i].mask for i in chosen], [f"syn_{pairs[i].stem}" for i in chosen]
    masks = load_masks(mask_files, RESOLUTION)
    images = _generate(work, params, masks, seed=1000)
    _write_pairs(work / params["name"], stems, images, masks)
    return {"pairs": len(stems)}


def synthetic_masks(work: Path, params: dict) -> dict:
    """A flow-matching mask generator on the Kvasir training masks, then best-of-4 synthetic masks (issue 3)."""
    from alignflow.masks.synthesis import MaskSynthesisConfig, synthesize_masks
    from alignflow.masks.training import MaskTrainConfig, train_mask_generator

    train_dir = _splits(work)["train"]
    folder = train_mask_generator(MaskTrainConfig(source=str(train_dir), out=str(work / "mask_generator"), steps=params["steps"],
                                                  device="cpu", checkpoint_every=200, preview_every=400), resume=True)
    report = synthesize_masks(MaskSynthesisConfig(generator=str(folder), masks=str(train_dir), out=str(work / "synthetic_masks"),
                                                  num_masks=SYNTHETIC_PAIRS, candidates=4, device="cpu",
                                                  postprocess={"sigma": 2.0, "opening_radius": 3, "closing_radius": 3, "min_area": 200}))
    return {"masks": SYNTHETIC_PAIRS, "report": {k: v for k, v in report.items() if isinstance(v, (int, float, str))}}


def downstream(work: Path, params: dict) -> dict:
    """A UNet on real Kvasir (+ an arm's synthetic pairs), scored on the ClinicDB test set and held-out Kvasir."""
    from alignflow.downstream import DownstreamConfig, evaluate_segmentation

    splits = _splits(work)
    synthetic = str(work / params["synthetic"]) if params.get("synthetic") else None
    feedback = {}
    if params.get("feedback"):  # Generative Feedback from this generator (free-lunch Eq. 10-11)
        feedback = {"feedback_generator": str(_generator_folder(work, params["feedback"])), "w_feedback": 1.0,
                    "feedback_temperature": FEEDBACK_TEMPERATURE, "feedback_batch_size": FEEDBACK_ROWS}
    config = DownstreamConfig(train=str(splits["train"]), synthetic=synthetic, **feedback,
                              synthetic_share=params.get("share", 0.25) if synthetic else None,
                              pretrain_synthetic_steps=params.get("pretrain", 0),
                              test={"clinicdb_test": str(splits["test_pairs"]), "kvasir_held_out": str(splits["held_out"])},
                              model="unet", steps=params.get("steps", DOWNSTREAM_STEPS), batch_size=16, resolution=RESOLUTION, seed=params["seed"],
                              out=str(work / params["name"]), device="cpu")
    results = evaluate_segmentation(config)
    return {name: {key: scores[key] for key in ("dice", "dice_std", "iou", "hd95")} for name, scores in results["test"].items()}


# --------------------------------------------------------------------------------------------------------- the plan

def _generator_tasks(generator: str) -> list[Task]:
    """Stage 2 with the chosen variant (``refs[_lm]``) and its score on the held-out masks."""
    refs, _, extra = generator.partition("_")  # extra: "lm" (+ L_M) or "arlm" (+ L_M, from the stage-1 + AR generator)
    deps = ["choose"] + (["advise"] if refs.startswith("adv") else []) + (["reward_segmenter"] if extra else [])
    params = {"refs": refs, **({"w_mask": 1.0} if extra else {}), **({"init": "stage1_ar", "w_ar": 1.0} if extra == "arlm" else {})}
    deps += ["stage1_ar"] if extra == "arlm" else []
    return [Task(f"align_{generator}", align, deps, params),
            Task(f"score_{generator}", score_generator, [f"align_{generator}", "evaluator"], {"generator": generator})]


def _downstream_tasks(arm: str, synthetic: str | None, **params: Any) -> list[Task]:
    deps = ([synthetic] if synthetic else []) + ([params["feedback"]] if params.get("feedback") else [])
    return [Task(f"down_{arm}_s{seed}", downstream, deps, {"seed": seed, "synthetic": synthetic, **params}) for seed in SEEDS]


def _synthetic_tasks(generator: str) -> list[Task]:
    trained_by = generator if generator.startswith("stage1") else f"align_{generator}"
    return [Task(f"synth_{generator}", synthesize_pairs, [trained_by], {"generator": generator}),
            *_downstream_tasks(generator, f"synth_{generator}")]


def plan() -> list[Task]:
    """All tasks, in priority order: the scheduler starts the first ready ones (``r10s0`` = the chosen variant's run)."""
    tasks = [
        Task("stage1", train_stage1),
        Task("evaluator", train_segmenter_for, params={"role": "evaluator"}),
        Task("advise", advise),
        Task("score_real", score_generator, ["evaluator"], {"generator": "real"}),
        Task("score_stage1", score_generator, ["stage1", "evaluator"], {"generator": "stage1"}),
    ]
    for name in STAGE2_VARIANTS:  # the two candidate settings, with the same 10 random references
        tasks += [Task(f"align_r10s0{name}", align, ["stage1"], {"refs": "r10s0", "variant": name}),
                  Task(f"score_r10s0{name}", score_generator, [f"align_r10s0{name}", "evaluator"], {"generator": f"r10s0{name}"})]
    tasks.append(Task("choose", choose_stage2, [f"score_r10s0{name}" for name in STAGE2_VARIANTS]))
    # Issue 7's core arms, then issue 9's and 10's generators, then the other reference counts.
    tasks += _downstream_tasks("real", None) + _synthetic_tasks("stage1") + _synthetic_tasks("r10s0")
    tasks.append(Task("reward_segmenter", train_segmenter_for, params={"role": "reward"}))
    tasks += _generator_tasks("r10s0_lm") + _generator_tasks("adv10") + _generator_tasks("r10s1") + _generator_tasks("r10s2")
    tasks += _generator_tasks("r1s0") + _generator_tasks("r5s0")
    tasks += _synthetic_tasks("r10s0_lm") + _synthetic_tasks("r5s0") + _synthetic_tasks("r1s0")
    # Issue 10's Alignment Regularization arms: a second stage 1 with AR, then aligned + AR + L_M (KID and fidelity).
    tasks += [Task("stage1_ar", train_stage1, [], {"w_ar": 1.0}),
              Task("score_stage1_ar", score_generator, ["stage1_ar", "evaluator"], {"generator": "stage1_ar"}),
              *_generator_tasks("r10s0_arlm"), *_synthetic_tasks("stage1_ar"), *_synthetic_tasks("r10s0_arlm")]
    # Issue 10's questions about how synthetic pairs are used, for the chosen aligned generator.
    tasks += _downstream_tasks("r10s0_share50", "synth_r10s0", share=0.5)
    tasks += _downstream_tasks("r10s0_pretrain", "synth_r10s0", share=0.0, pretrain=200)
    # Controls of the pre-training arm: the same 600 steps on real pairs only, and stage-1 images for pre-training.
    tasks += _downstream_tasks("real_600steps", None, steps=DOWNSTREAM_STEPS + 200)
    tasks += _downstream_tasks("stage1_pretrain", "synth_stage1", share=0.0, pretrain=200)
    # Synthetic masks last: the mask generator alone costs as much as two downstream runs.
    tasks += [Task("synthetic_masks", synthetic_masks, [], {"steps": 800}),
              Task("synth_r10s0_synmasks", synthesize_pairs, ["synthetic_masks", "align_r10s0"], {"generator": "r10s0", "masks": "synthetic"}),
              *_downstream_tasks("r10s0_synmasks", "synth_r10s0_synmasks")]
    # Added after the first run (session 4): issue 10's fidelity filtering as an arm (best of 4 per mask, picked by the
    # reward segmenter), and the core arms under a 3x longer downstream protocol (the 400-step UNet is not converged).
    best = {"generator": "r10s0", "candidates": FILTER_CANDIDATES}
    tasks += [Task("score_r10s0_best4", score_generator, ["align_r10s0", "evaluator", "reward_segmenter"], dict(best)),
              Task("synth_r10s0_best4", synthesize_pairs, ["align_r10s0", "reward_segmenter"], dict(best)),
              *_downstream_tasks("r10s0_best4", "synth_r10s0_best4")]
    for arm, synthetic in (("real", None), ("r10s0", "synth_r10s0"), ("stage1", "synth_stage1")):
        tasks += _downstream_tasks(f"{arm}_long", synthetic, steps=LONG_DOWNSTREAM_STEPS)
    # Generative Feedback with the stage-1 generator (the one trained on the images the UNet sees), on real pairs
    # alone and with the aligned generator's pairs.
    tasks += _downstream_tasks("real_gf", None, feedback="stage1")
    tasks += _downstream_tasks("r10s0_gf", "synth_r10s0", feedback="stage1")
    for task in tasks:
        task.params.setdefault("name", task.name)
    assert len({id(task.params) for task in tasks}) == len(tasks), "tasks must not share a params dict (the name is set in it)"
    return tasks


# ---------------------------------------------------------------------------------------------------- the scheduler

def _link_chosen(work: Path) -> None:
    """``align_r10s0`` (the generator every later arm compares with) is the chosen variant's run folder."""
    link = work / "align_r10s0"
    chosen = _done(work, "choose")
    if chosen and not link.exists():
        link.symlink_to(f"align_r10s0{chosen['variant']}")
        score = work / "score_r10s0"
        if not score.exists():
            score.symlink_to(f"score_r10s0{chosen['variant']}")


def _running_elsewhere(work: Path, name: str) -> bool:
    """A task another scheduler (a second invocation of this script) is running now: its lock names a live process."""
    import os

    lock = work / name / "running.pid"
    if not lock.exists():
        return False
    try:
        os.kill(int(lock.read_text()), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True


def _execute(work: Path, task: Task) -> tuple[str, bool, str]:
    import os

    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    (work / task.name).mkdir(parents=True, exist_ok=True)
    (work / task.name / "running.pid").write_text(str(os.getpid()))
    try:
        result = task.run(work, task.params)
    except Exception:  # one failed arm must not stop the others; the report lists it
        return task.name, False, traceback.format_exc()
    finally:
        (work / task.name / "running.pid").unlink(missing_ok=True)
    result["task_seconds"] = time.perf_counter() - started
    (work / task.name).mkdir(parents=True, exist_ok=True)
    (work / task.name / "done.json").write_text(json.dumps(result, indent=2, default=str))
    return task.name, True, f"{result['task_seconds'] / 60:.1f} min"


def _importable(task: Task) -> bool:
    """Downstream tasks wait until ``alignflow.downstream`` exists (it may land while the plan runs)."""
    import importlib.util

    if task.run is not downstream:
        return True
    importlib.invalidate_caches()
    return importlib.util.find_spec("alignflow.downstream") is not None


def run_plan(work: Path, workers: int, only: set[str] | None) -> None:
    tasks = [task for task in plan() if only is None or task.name in only or any(task.name.startswith(o) for o in only)]
    names = {task.name for task in plan()}
    finished = {name for name in names if _done(work, name) is not None}
    failed: set[str] = set()
    running: dict = {}
    # One task per process: later tasks import the engine afresh (and pick up code committed meanwhile).
    with ProcessPoolExecutor(max_workers=workers, max_tasks_per_child=1) as pool:
        while True:
            _link_chosen(work)
            if "choose" in finished:
                finished |= {"align_r10s0", "score_r10s0"}
            finished |= {name for name in names - finished if _done(work, name) is not None}  # finished elsewhere
            elsewhere = {task.name for task in tasks if task.name not in finished | set(running) and _running_elsewhere(work, task.name)}
            ready = [task for task in tasks if task.name not in finished | failed | set(running) | elsewhere
                     and all(dep in finished for dep in task.deps) and _importable(task)]
            blocked = [task for task in tasks if task.name not in finished | failed | set(running)
                       and any(dep in failed for dep in task.deps)]
            failed |= {task.name for task in blocked}
            for task in ready[: workers - len(running)]:
                print(f"[{time.strftime('%H:%M:%S')}] start {task.name}", flush=True)
                running[task.name] = pool.submit(_execute, work, task)
            if not running:
                waiting = any(task.name not in finished | failed and all(dep in finished for dep in task.deps)
                              and not _importable(task) for task in tasks)
                if elsewhere or waiting:  # tasks of another scheduler, or the downstream package not there yet
                    time.sleep(30)
                    continue
                break
            done, _ = wait(running.values(), timeout=60, return_when=FIRST_COMPLETED)
            for future in done:
                name, ok, message = future.result()
                del running[name]
                (finished if ok else failed).add(name)
                print(f"[{time.strftime('%H:%M:%S')}] {'done' if ok else 'FAILED'} {name}: {message}", flush=True)
    if failed:
        print("failed or blocked:", ", ".join(sorted(failed)))


# ----------------------------------------------------------------------------------------------------- the report

ARMS = [("real only", "real", None), ("+ stage 1", "stage1", "stage1"), ("+ aligned, 1 ref", "r1s0", "r1s0"),
        ("+ aligned, 5 refs", "r5s0", "r5s0"), ("+ aligned, 10 refs", "r10s0", "r10s0"),
        ("+ aligned, 10 refs, synthetic masks", "r10s0_synmasks", "r10s0"), ("+ aligned + L_M, 10 refs", "r10s0_lm", "r10s0_lm"),
        ("+ stage 1 with AR", "stage1_ar", "stage1_ar"), ("+ aligned + AR + L_M, 10 refs", "r10s0_arlm", "r10s0_arlm"),
        ("+ aligned, 10 refs, best of 4 per mask (fidelity filter)", "r10s0_best4", "r10s0_best4"),
        ("+ aligned, 10 refs, 50 % synthetic", "r10s0_share50", "r10s0"),
        ("real only, 600 steps (the pre-training arms' budget)", "real_600steps", None),
        ("stage 1: 200 steps synthetic pre-training, 400 real", "stage1_pretrain", "stage1"),
        ("aligned 10 refs: 200 steps synthetic pre-training, 400 real", "r10s0_pretrain", "r10s0"),
        ("real only + Generative Feedback (stage-1 generator)", "real_gf", None),
        ("+ aligned, 10 refs + Generative Feedback (stage-1 generator)", "r10s0_gf", "r10s0"),
        (f"real only, {LONG_DOWNSTREAM_STEPS} steps", "real_long", None),
        (f"+ stage 1, {LONG_DOWNSTREAM_STEPS} steps", "stage1_long", "stage1"),
        (f"+ aligned, 10 refs, {LONG_DOWNSTREAM_STEPS} steps", "r10s0_long", "r10s0")]


def _mean_std(values: list[float]) -> str:
    import numpy as np

    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "-"


def report(work: Path) -> None:
    _link_chosen(work)
    chosen = _done(work, "choose")
    if chosen:
        print(f"stage-2 variant chosen on validation KID: {chosen['variant']} {chosen['params']} (validation KID {chosen['validation_kid']})")
    print("\n| arm | seeds | ClinicDB test mDice | mIoU | HD95 (px) | Kvasir held-out mDice | KID of its generator to ClinicDB test | mask fidelity (ratio to ceiling) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, arm, generator in ARMS:
        runs = [r for r in (_done(work, f"down_{arm}_s{seed}") for seed in SEEDS) if r]
        score = _done(work, f"score_{generator}") if generator else None
        kid = f"{score['kid_test']:.3f}" if score else "-"
        fid = f"{score['fidelity']['dice']:.3f} ({score['fidelity']['ratio_to_ceiling']:.2f})" if score else "-"
        target = [r["clinicdb_test"] for r in runs]
        print(f"| {label} | {len(runs)} | {_mean_std([t['dice'] for t in target])} | {_mean_std([t['iou'] for t in target])} | "
              f"{_mean_std([t['hd95'] for t in target])} | {_mean_std([r['kvasir_held_out']['dice'] for r in runs])} | {kid} | {fid} |")
    print("\n| generator | stage-2 references | KID to ClinicDB test | KID to validation | mask fidelity Dice (ceiling) |")
    print("|---|---|---|---|---|")
    for generator in ["real", "stage1", "stage1_ar", *(f"r10s0{v}" for v in STAGE2_VARIANTS), "r1s0", "r5s0", "r10s1", "r10s2", "adv10",
                      "r10s0_lm", "r10s0_arlm", "r10s0_best4"]:
        score = _done(work, f"score_{generator}")
        if score:
            print(f"| {generator} | {generator.split('_')[0] if not generator.startswith(('real', 'stage1')) else '-'} | {score['kid_test']:.4f} ± {score['kid_test_std']:.4f} | "
                  f"{score['kid_validation']:.4f} | {score['fidelity']['dice']:.3f} ({score['fidelity_ceiling']:.3f}) |")
    grid_picture(work)


def grid_picture(work: Path, count: int = 8, out: Path = Path("docs/images/polyp_shift_grid.png")) -> None:
    """Rows: held-out masks, then each generator's images with the mask's outline drawn in green."""
    import numpy as np
    from skimage.segmentation import find_boundaries

    from alignflow.data import list_images, read_image, read_mask, resize_image

    rows = []
    generators = [g for g in ("real", "stage1", "stage1_ar", "r10s0", "r10s0_lm", "r10s0_arlm", "r10s0_best4")
                  if (work / f"score_{g}" / "images").is_dir()]
    if not generators:
        return
    masks = [read_mask(p) for p in sorted((work / f"score_{generators[0]}" / "masks").iterdir())[:count]]
    rows.append([np.repeat((m > 0).astype(np.uint8)[..., None] * 255, 3, axis=2) for m in masks])
    for generator in generators:
        images = [read_image(p) for p in list_images(work / f"score_{generator}" / "images")[:count]]
        outlined = []
        for image, mask in zip(images, masks):
            image = image.copy()
            image[find_boundaries(mask > 0, mode="inner")] = (0, 255, 0)
            outlined.append(image)
        rows.append(outlined)
    side = rows[0][0].shape[0]
    target = [np.asarray(read_image(p)) for p in list_images(_splits(work)["test"])[:count]]  # unpaired, for the look
    rows.append([resize_image(image, side) for image in target])
    grid = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    from alignflow.data import write_image

    write_image(out, grid)
    print(f"grid (rows: masks, {', '.join(generators)}, real ClinicDB test images) written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/exp")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="run only these tasks (name prefixes)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    work = Path(args.work)
    if not args.report_only:
        started = time.perf_counter()
        run_plan(work, args.workers, set(args.only) if args.only else None)
        print(f"plan finished in {(time.perf_counter() - started) / 60:.1f} min")
    report(work)


if __name__ == "__main__":
    main()
