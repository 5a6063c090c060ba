"""Real-data domain shift: stage 1 on Kvasir-SEG, stage 2 with 10 CVC-ClinicDB references, KID to CVC-ClinicDB test.

Compares, at equal total training time, the stage-1 generator trained for the whole budget with stage 1 + stage 2
(and reports the stage-1 checkpoint the alignment started from). Writes a JSON of results, a grid picture
(masks / stage-1 images / aligned images / real target images) and prints the per-step cost breakdown.

    python benchmarks/kvasir_to_clinicdb.py --work runs/bench --stage1-minutes 14 --stage2-minutes 9

Splits (no file is copied; the split folders hold symlinks into ../shared/data):
- Kvasir-SEG: 900 training pairs, 100 held-out masks (seeded split) that the generators turn into images.
- CVC-ClinicDB: frames 1-306 (reference pool; 10 drawn with the seed) and frames 307-612 (test). Frames are
  consecutive video frames in sequences, so splitting by frame range keeps test sequences away from the references
  (at most one sequence straddles the boundary).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import time
from pathlib import Path

import torch

from alignflow.data import list_images, load_reference_images, mask_to_rgb, read_mask, resize_mask, scan_dataset, split_indices, to_uint8, write_image
from alignflow.data.references import select_references
from alignflow.device import resolve_device
from alignflow.generator.config import TrainConfig
from alignflow.generator.sampling import generate_images, load_generator
from alignflow.generator.training import train
from alignflow.metrics.kid import KernelInceptionDistanceTo

SHARED = Path(os.environ.get("ALIGNFLOW_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def link_split(pairs, out: Path) -> Path:
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        for sub, path in (("images", pair.image), ("masks", pair.mask)):
            link = out / sub / path.name
            if not link.exists():
                link.symlink_to(path.resolve())
    return out


def prepare_splits(work: Path, seed: int) -> dict[str, Path]:
    kvasir = scan_dataset(SHARED / "data" / "Kvasir-SEG")
    held_out, training = split_indices(len(kvasir.pairs), [100], seed)
    clinic = scan_dataset(SHARED / "data" / "CVC-ClinicDB")
    by_frame = sorted(clinic.pairs, key=lambda pair: int(pair.stem))
    pool, test = by_frame[:306], by_frame[306:]
    return {
        "train": link_split([kvasir.pairs[i] for i in training], work / "kvasir_train"),
        "held_out": link_split([kvasir.pairs[i] for i in held_out], work / "kvasir_held_out"),
        "reference_pool": link_split(pool, work / "clinicdb_pool") / "images",
        "test": link_split(test, work / "clinicdb_test") / "images",
    }


def run_for_minutes(config: TrainConfig, minutes: float, probe_steps: int = 20) -> Path:
    """Train for about ``minutes``: a short probe measures seconds per step, then the run continues to the budget."""
    finished = Path(config.out) / "summary.json"
    if finished.exists() and json.loads(finished.read_text())["steps"] > probe_steps:
        return Path(config.out) / "generator"  # a re-run of the benchmark reuses finished stages
    config.steps = probe_steps
    probe = train(config, resume=True)  # resume=True: a re-run of the benchmark continues its folders
    per_step = summary(probe.parent)["seconds"] / probe_steps  # loop time only, not the one-off dataset encoding
    config.steps = max(probe_steps + 1, int(minutes * 60 / per_step))
    return train(config, resume=True)


def relative_step_cost(stage2_summary: dict) -> float:
    """Seconds of one stage-2 step over one stage-1 step, from the stage-2 run itself.

    Every stage-2 step contains one denoising (stage-1) step, timed separately in the same process at the same time,
    so the ratio is free of whatever else the machine was doing; wall-clock totals of two runs made at different
    times are not.
    """
    per_step = stage2_summary["seconds"] / stage2_summary["steps"]
    return per_step / stage2_summary["seconds_per_step"]["denoising"]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/bench")
    parser.add_argument("--stage1-minutes", type=float, default=14.0)
    parser.add_argument("--stage2-minutes", type=float, default=9.0)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--num-references", type=int, default=10)
    parser.add_argument("--frozen-model", default="current", choices=["current", "snapshot"])
    parser.add_argument("--w-align", type=float, default=1.0)
    parser.add_argument("--t-is", type=int, default=18)  # the recorded runs; the engine default is now 5 (polyp_shift.py)
    parser.add_argument("--stage2-lr", type=float, default=3e-4, help="stage-2 learning rate of the recorded runs (engine default 1e-4)")
    parser.add_argument("--stage2-steps", type=int, help="a fixed number of stage-2 steps instead of --stage2-minutes")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--sample-steps", type=int, default=28)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", default="docs/images/kvasir_clinicdb_grid.png")
    parser.add_argument("--skip-baseline", action="store_true", help="compare stage-2 variants only (no equal-time stage 1)")
    args = parser.parse_args()
    work = Path(args.work)
    splits = prepare_splits(work, args.seed)
    references = select_references(splits["reference_pool"], args.num_references, args.seed)
    common = dict(source=str(splits["train"]), batch_size=8, device="auto", precision=args.precision, seed=args.seed,
                  checkpoint_every=500, preview_every=500, log_every=50)

    stage1 = run_for_minutes(TrainConfig(out=str(work / "stage1"), generator={"resolution": args.resolution}, **common), args.stage1_minutes)
    variant = f"stage2_{args.frozen_model}_w{args.w_align}" + (f"_tis{args.t_is}" if args.t_is != 18 else "")
    stage2_config = TrainConfig(stage=2, out=str(work / variant), init=str(stage1), references=[str(p) for p in references], lr=args.stage2_lr,
                                w_align=args.w_align, t_is=args.t_is, frozen_model=args.frozen_model, **common)
    if args.stage2_steps:
        stage2_config.steps = args.stage2_steps
        stage2 = train(copy.deepcopy(stage2_config), resume=True)
    else:
        stage2 = run_for_minutes(copy.deepcopy(stage2_config), args.stage2_minutes, probe_steps=5)
    # The equal-compute baseline: stage 1 continued for as many stage-1 steps as stage 2's steps cost.
    s1, s2 = summary(work / "stage1"), summary(stage2.parent)
    models = [("stage1", stage1), ("aligned", stage2)]
    if not args.skip_baseline:
        baseline_dir = work / f"stage1_equal_time_{variant}"
        ratio = relative_step_cost(s2)
        baseline_steps = s1["steps"] + round(s2["steps"] * ratio)
        print(f"one stage-2 step costs {ratio:.2f} stage-1 steps: baseline = {baseline_steps} stage-1 steps")
        if not baseline_dir.exists():  # continue a copy of the stage-1 run (same optimizer state), keeping the original
            shutil.copytree(work / "stage1", baseline_dir)
        baseline = train(TrainConfig(out=str(baseline_dir), steps=baseline_steps, generator={"resolution": args.resolution}, **common), resume=True)
        models.insert(1, ("stage1_equal_time", baseline))

    device = resolve_device("auto")
    masks_paths = [pair.mask for pair in scan_dataset(splits["held_out"]).pairs]
    masks = torch.stack([torch.from_numpy(resize_mask(read_mask(p), args.resolution)).long() for p in masks_paths])
    target = load_reference_images(list_images(splits["test"]), args.resolution)
    kid_to_target = KernelInceptionDistanceTo(target, subset_size=100, device=device)
    results, images = {}, {}
    for name, folder in models:
        generator = load_generator(folder, device)
        started = time.perf_counter()
        images[name] = generate_images(generator, masks, seed=args.seed, num_steps=args.sample_steps, guidance_scale=args.guidance)
        seconds = time.perf_counter() - started
        kid, kid_std = kid_to_target(images[name])
        results[name] = {"kid": kid, "kid_std": kid_std, "train_seconds": generator.info.get("train_seconds"),
                         "generate_seconds_per_image": seconds / len(masks)}
        print(f"{name:18s} KID {kid:.4f} +- {kid_std:.4f}  (trained {generator.info.get('train_seconds', 0) / 60:.1f} min)")
    real_source = load_reference_images([pair.image for pair in scan_dataset(splits["held_out"]).pairs], args.resolution)
    results["real_kvasir_held_out"] = dict(zip(("kid", "kid_std"), kid_to_target(real_source)))
    print(f"{'real Kvasir':18s} KID {results['real_kvasir_held_out']['kid']:.4f}")
    results["timing"] = {"stage1": s1, "stage2": s2, "stage2_over_stage1_step_cost": None if args.skip_baseline else ratio}
    print("stage 1 s/step:", {k: round(v, 4) for k, v in s1["seconds_per_step"].items()}, f"peak {s1['peak_memory_mb']:.0f} MB")
    print("stage 2 s/step:", {k: round(v, 4) for k, v in s2["seconds_per_step"].items()}, f"peak {s2['peak_memory_mb']:.0f} MB")
    (work / f"results_{variant}.json").write_text(json.dumps({**results, "args": vars(args), "references": [str(p) for p in references]}, indent=2))

    if args.skip_baseline:
        return
    columns = 8
    rows = [mask_to_rgb(masks[:columns], 2), images["stage1_equal_time"][:columns], images["aligned"][:columns], target[:columns]]
    grid = torch.cat([torch.cat(list(row), dim=2) for row in rows], dim=1)
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    write_image(Path(args.figure), to_uint8(grid))
    print(f"grid (masks / stage 1, equal time / aligned / real CVC-ClinicDB test) written to {args.figure}")


if __name__ == "__main__":
    main()
