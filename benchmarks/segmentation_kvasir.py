"""MedFlowSeg on real data: train the small preset on Kvasir-SEG, score held-out Kvasir-SEG and CVC-ClinicDB.

    OMP_NUM_THREADS=1 python benchmarks/segmentation_kvasir.py --work runs/seg_bench --resolution 64 --steps 1000

Splits (the same as benchmarks/kvasir_to_clinicdb.py): Kvasir-SEG pairs are cut with
``alignflow.data.split_indices(1000, [100], seed)`` into 100 held-out and 900 training pairs; CVC-ClinicDB frames
307-612 (306 images, never seen in training) are the cross-domain test set.

Reported per test set, at each image's original size (predictions are resized back, nearest neighbour):
- Dice and IoU of the foreground (mean over images; torchmetrics) for the STAPLE-fused ensemble, for a plain
  majority vote of the same samples, for the first sample alone and for the Condition Network's auxiliary head
  (a deterministic UNet prediction trained inside the same run);
- whether uncertainty marks the errors: AUROC of each per-pixel uncertainty map for predicting the pixels where
  the fused label is wrong (pooled over all pixels of the set), and the Dice of the 25 % most vs least uncertain
  images (by mean entropy);
- seconds per image for sampling + fusion.
``--sweep N`` adds Dice vs Euler steps (1, 2, 5, 10, 20, 50) x ensemble size (1, 5, 10) on N held-out images.
Writes results.json and a picture (image / ground truth / fused / entropy) to --work.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.functional.segmentation import dice_score, mean_iou

from alignflow.data import load_pairs, read_image, read_mask, resize_image, resize_to, scan_dataset, split_indices, to_tensor, write_image
from alignflow.segmentation.config import SegmenterTrainConfig
from alignflow.segmentation.inference import load_segmenter, segment_images
from alignflow.segmentation.trainer import SEGMENTER_DIR, train_segmenter
from alignflow.segmentation.uncertainty import UNCERTAINTY_KINDS, maximum_value

SHARED = Path(os.environ.get("ALIGNFLOW_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def foreground_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of class 1 for one image (an image where both are empty scores 1)."""
    p, t = torch.from_numpy(predicted.astype(np.int64))[None], torch.from_numpy(truth.astype(np.int64))[None]
    if not (p.any() or t.any()):
        return 1.0, 1.0
    dice = dice_score(p, t, num_classes=2, include_background=False, input_format="index")
    iou = mean_iou(p, t, num_classes=2, include_background=False, input_format="index")
    return float(dice.mean()), float(iou.mean())


def aux_predictions(segmenter, images: list[np.ndarray]) -> list[np.ndarray]:
    """The Condition Network head's argmax, resized back to each image."""
    resolution = segmenter.config.resolution
    out = []
    with torch.no_grad():
        for image in images:
            logits = segmenter.model.condition(to_tensor(resize_image(image, resolution))[None].to(segmenter.device)).aux_logits
            out.append(resize_to(logits.argmax(1)[0].to(torch.uint8).cpu().numpy(), image.shape[:2], kind="mask"))
    return out


def evaluate(segmenter, images, masks, num_samples: int, num_steps: int, seed: int) -> tuple[dict, object]:
    started = time.perf_counter()
    result = segment_images(segmenter, images, num_samples=num_samples, num_steps=num_steps, seed=seed, batch_size=4)
    seconds = time.perf_counter() - started
    scores = {"staple": [], "vote": [], "first_sample": [], "aux_head": []}
    aux = aux_predictions(segmenter, images)
    errors, maps = [], {kind: [] for kind in UNCERTAINTY_KINDS}
    for item, truth, aux_labels in zip(result.images, masks, aux):
        votes = (item.samples == 1).mean(axis=0)
        scores["staple"].append(foreground_scores(item.labels, truth))
        scores["vote"].append(foreground_scores((votes > 0.5).astype(np.uint8), truth))
        scores["first_sample"].append(foreground_scores(item.samples[0], truth))
        scores["aux_head"].append(foreground_scores(aux_labels, truth))
        errors.append((item.labels != truth).ravel())
        for kind in UNCERTAINTY_KINDS:
            maps[kind].append(item.uncertainty[kind].ravel())
    error = torch.from_numpy(np.concatenate(errors).astype(np.int64))
    report = {name: {"dice": float(np.mean([s[0] for s in values])), "iou": float(np.mean([s[1] for s in values]))} for name, values in scores.items()}
    report["auroc_uncertainty_vs_error"] = {kind: float(binary_auroc(torch.from_numpy(np.concatenate(values)), error)) for kind, values in maps.items()} if error.any() else None
    mean_entropy = np.array([item.uncertainty["entropy"].mean() for item in result.images])
    order = np.argsort(mean_entropy)
    quarter = max(1, len(order) // 4)
    per_image_dice = np.array([s[0] for s in scores["staple"]])
    report["dice_least_uncertain_quarter"] = float(per_image_dice[order[:quarter]].mean())
    report["dice_most_uncertain_quarter"] = float(per_image_dice[order[-quarter:]].mean())
    report["images"] = len(images)
    report["seconds_per_image"] = seconds / len(images)
    return report, result


def picture(path: Path, images, masks, result, count: int = 4, side: int = 128) -> None:
    """Rows: image, ground truth, fused prediction, entropy map (white = ln 2)."""
    rows = [[], [], [], []]
    for image, truth, item in list(zip(images, masks, result.images))[:count]:
        rows[0].append(resize_image(image, side))
        for row, values in ((1, truth * 255), (2, item.labels * 255), (3, np.rint(item.uncertainty["entropy"] / maximum_value("entropy", 2) * 255))):
            grey = resize_to(values.astype(np.uint8), (side, side), kind="mask")
            rows[row].append(np.repeat(grey[:, :, None], 3, axis=2))
    write_image(path, np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0))


def load_test_set(root: Path, stems: list[str] | None = None, indices=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    folder = scan_dataset(root)
    pairs = [folder.pairs[i] for i in indices] if indices is not None else [p for p in folder.pairs if p.stem in set(stems)]
    return [read_image(p.image) for p in pairs], [read_mask(p.mask) for p in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/seg_bench")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000, help="training steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--num-samples", type=int, default=5)
    parser.add_argument("--sample-steps", type=int, default=10)
    parser.add_argument("--sweep", type=int, default=0, help="held-out images for the steps x ensemble-size sweep (0 = none)")
    parser.add_argument("--skip-test-sets", action="store_true", help="only the sweep (results.json keeps earlier scores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.work)
    torch.manual_seed(args.seed)

    kvasir = scan_dataset(SHARED / "data" / "Kvasir-SEG")
    held_out, training = split_indices(len(kvasir.pairs), [100], args.seed)
    run_dir = work / "run"
    if not (run_dir / SEGMENTER_DIR).is_dir():
        images, masks = load_pairs(kvasir, args.resolution, indices=training)
        config = SegmenterTrainConfig(out=str(run_dir), preset="small", resolution=args.resolution, steps=args.steps,
                                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, device="cpu",
                                      log_every=50, checkpoint_every=250, preview_every=args.steps)
        started = time.perf_counter()
        train_segmenter(config, [lambda e: print(f"step {e['step']}/{e['total']} loss {e['loss']:.3f} vel {e['loss_vel']:.3f} aux {e['loss_aux']:.3f}", flush=True) if e["type"] == "progress" else None],
                        resume=(run_dir / "config.json").exists(), images=images, masks=masks)
        print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    segmenter = load_segmenter(run_dir, "cpu")
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results |= {"settings": vars(args), "train_seconds": summary["seconds"], "seconds_per_step": summary["seconds_per_step"],
               "parameters": sum(p.numel() for p in segmenter.model.parameters())}

    clinic = scan_dataset(SHARED / "data" / "CVC-ClinicDB")
    test_stems = [p.stem for p in sorted(clinic.pairs, key=lambda pair: int(pair.stem))[306:]]
    sets = {"kvasir_held_out": load_test_set(SHARED / "data" / "Kvasir-SEG", indices=held_out),
            "clinicdb_test": load_test_set(SHARED / "data" / "CVC-ClinicDB", stems=test_stems)}
    for name, (images, masks) in ({} if args.skip_test_sets else sets).items():
        report, result = evaluate(segmenter, images, masks, args.num_samples, args.sample_steps, args.seed)
        results[name] = report
        print(name, json.dumps(report), flush=True)
        picture(work / f"{name}.png", images, masks, result)
    if args.sweep:
        images, masks = sets["kvasir_held_out"]
        images, masks = images[: args.sweep], masks[: args.sweep]
        sweep = {}
        for num_samples in (1, 5, 10):
            for steps in (1, 2, 5, 10, 20, 50):
                started = time.perf_counter()
                result = segment_images(segmenter, images, num_samples=num_samples, num_steps=steps, seed=args.seed)
                dice = float(np.mean([foreground_scores(item.labels, truth)[0] for item, truth in zip(result.images, masks)]))
                sweep[f"M{num_samples}_steps{steps}"] = {"dice": dice, "seconds_per_image": (time.perf_counter() - started) / len(images)}
                print("sweep", num_samples, steps, sweep[f"M{num_samples}_steps{steps}"], flush=True)
        results["sweep"] = sweep
    results_path.write_text(json.dumps(results, indent=2))
    print(f"results in {results_path}")


if __name__ == "__main__":
    main()
