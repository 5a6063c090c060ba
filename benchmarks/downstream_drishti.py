"""Downstream evaluation on Drishti-GS_roi (3 classes): MedFlowSeg's small preset against the plain UNet, each
trained for about the same wall time, scored with Dice / IoU / HD95 on a held-out 20 % (also per region: optic
disc = rim + cup, and cup).

    OMP_NUM_THREADS=1 python benchmarks/downstream_drishti.py --work runs/downstream_drishti \
        --unet-steps 800 --medflowseg-steps 140

Split: ``alignflow.data.split_indices(101, [0.2], seed)`` -> 20 test pairs and 81 training pairs, written to
``WORK/split/{train,test}`` as folders of symlinks into ../shared/data (no file is copied) and listed again in each
arm's splits.json. Every arm is one ``alignflow.downstream.evaluate_segmentation`` call (its folder WORK/<arm>); a
finished arm is reused when the script is run again. Scores are at 128 px (images and masks squashed to the
square, as training sees them). Prints a table and writes WORK/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from alignflow.data import load_masks, scan_dataset, split_indices
from alignflow.downstream import DownstreamConfig, evaluate_segmentation, score_segmentations, summarize_scores
from alignflow.downstream.metrics import region_masks

SHARED = Path(os.environ.get("ALIGNFLOW_SHARED", Path(__file__).resolve().parents[2] / "shared"))
REGIONS = {"disc": [1, 2], "cup": [2]}  # Drishti-GS_roi: 1 = disc rim, 2 = cup (docs of ../shared/data)


def write_split(dataset: Path, work: Path, seed: int) -> dict[str, Path]:
    """WORK/split/{test,train}: folders of symlinks, a seeded 20 / 80 cut of the dataset's sorted pairs."""
    folder = scan_dataset(dataset)
    test, train = split_indices(len(folder), [0.2], seed)
    roots = {}
    for name, indices in (("train", train), ("test", test)):
        root = work / "split" / name
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for index in indices:
            pair = folder.pairs[int(index)]
            for sub, path in (("images", pair.image), ("masks", pair.mask)):
                link = root / sub / path.name
                if not link.exists():
                    link.symlink_to(path.resolve())
        roots[name] = root
    return roots


def region_scores(arm: Path, test: Path, resolution: int) -> dict[str, dict]:
    """Disc and cup Dice / IoU / HD95 from the arm's saved predictions (binary maps of each region)."""
    folder = scan_dataset(test)
    predicted = load_masks([arm / "predictions" / "test" / f"{pair.stem}.png" for pair in folder.pairs], resolution)
    truth = load_masks([pair.mask for pair in folder.pairs], resolution)
    stems = [pair.stem for pair in folder.pairs]
    out = {}
    for name in REGIONS:
        region_predicted, region_truth = region_masks(predicted, REGIONS)[name], region_masks(truth, REGIONS)[name]
        summary = summarize_scores(score_segmentations(region_predicted, region_truth, 2), stems)
        out[name] = {key: summary[key] for key in ("dice", "dice_std", "iou", "iou_std", "hd95", "hd95_std", "hd95_undefined")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/downstream_drishti"))
    parser.add_argument("--dataset", type=Path, default=SHARED / "data" / "Drishti-GS_roi")
    parser.add_argument("--unet-steps", type=int, default=800)
    parser.add_argument("--medflowseg-steps", type=int, default=140)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", nargs="+", default=["unet", "medflowseg"])
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    split = write_split(args.dataset, args.work, args.seed)
    arms = {
        "unet": {"model": "unet", "steps": args.unet_steps, "batch_size": 16},
        "medflowseg": {"model": "medflowseg", "steps": args.medflowseg_steps, "batch_size": 8,
                       "model_options": {"preset": "small", "num_samples": 10, "num_steps": 5}},
    }
    table = {}
    for arm in args.arms:
        config = DownstreamConfig.from_dict({
            "train": str(split["train"]), "test": {"test": str(split["test"])}, "out": str(args.work / arm),
            "resolution": args.resolution, "seed": args.seed, "device": "cpu", "checkpoint_every": 100,
            "preview_every": 10_000, **arms[arm]})
        results = evaluate_segmentation(config, resume=(args.work / arm / "config.json").exists())
        block = results["test"]["test"]
        table[arm] = {
            "steps": config.steps, "batch_size": config.batch_size, "train_seconds": results["train_seconds"],
            "peak_memory_mb": results["peak_memory_mb"],
            **{key: block[key] for key in ("count", "dice", "dice_std", "iou", "iou_std", "hd95", "hd95_std", "hd95_undefined")},
            "per_class": block["per_class"], "regions": region_scores(args.work / arm, split["test"], args.resolution),
        }
    def number(value: float | None, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    (args.work / "results.json").write_text(json.dumps(table, indent=2) + "\n")
    print(f"{'arm':<11} {'steps':>5} {'train s':>8}  {'mDice':>13}  {'mIoU':>13}  {'HD95 px':>12}  {'disc Dice':>9}  {'cup Dice':>8}  "
          f"{'rim Dice':>8}")
    for arm, row in table.items():
        print(f"{arm:<11} {row['steps']:>5} {row['train_seconds']:>8.0f}  {number(row['dice'])} ± {number(row['dice_std'])}  "
              f"{number(row['iou'])} ± {number(row['iou_std'])}  {number(row['hd95'], 1):>5} ± {number(row['hd95_std'], 1):>4}  "
              f"{number(row['regions']['disc']['dice']):>9}  {number(row['regions']['cup']['dice']):>8}  "
              f"{number(row['per_class']['1']['dice']):>8}")


if __name__ == "__main__":
    main()
