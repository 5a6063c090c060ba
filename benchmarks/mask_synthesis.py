"""Mask synthesis on real data: latent vs pixel space, post-processing step by step, best-of-K.

For each dataset (Kvasir-SEG, binary; Drishti-GS_roi, 3 classes) and each data space of the mask generator, trains
the generator for the same number of steps with the same number of tokens, then samples masks and reports, for the raw samples, after each
post-processing step and for the real masks: the fraction of invalid pixel values, of masks with more than one
component per class, of empty masks, and the mean isoperimetric ratio (boundary roughness). Then best-of-K against
held-out real masks. Writes pictures to docs/images/ and the numbers to WORK/results_masks.json.

    python benchmarks/mask_synthesis.py --work runs/bench_masks --steps 929

Training runs are resumable: a second call reuses finished runs and only re-evaluates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from alignflow.data import load_masks, scan_dataset, split_indices, write_image
from alignflow.device import resolve_device
from alignflow.masks.training import MaskTrainConfig, train_mask_generator

DATASETS = {"kvasir": "Kvasir-SEG", "drishti": "Drishti-GS_roi"}


def shared_data() -> Path:
    return Path(os.environ.get("ALIGNFLOW_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"


def train_masks_folder(work: Path, name: str, indices: np.ndarray) -> Path:
    """A dataset folder of symlinks to the training split (the generator must not see the held-out masks)."""
    folder = scan_dataset(shared_data() / DATASETS[name])
    root = work / f"{name}_train"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in indices:
        pair = folder.pairs[int(i)]
        for sub, path in (("images", pair.image), ("masks", pair.mask)):
            link = root / sub / path.name
            if not link.exists():
                link.symlink_to(path)
    return root


def train(source: Path, work: Path, name: str, space: str, args: argparse.Namespace) -> Path:
    run = work / f"{name}_{space}"
    if (run / "summary.json").exists():
        return run / "generator"
    # Equal steps and equal token counts (64 tokens: 16x16 latents in 2x2 patches, or 64x64 pixels in 8x8 patches),
    # so both spaces get the same transformer compute; their wall-clock times are reported too.
    generator = {"space": space, "patch_size": 2 if space == "latent" else args.pixel_patch}
    print(f"[{name} {space}] training {args.steps} steps", flush=True)
    config = MaskTrainConfig(source=str(source), out=str(run), steps=args.steps, batch_size=args.batch_size,
                             preview_every=500, checkpoint_every=100, generator=generator)
    return train_mask_generator(config, resume=(run / "config.json").exists())


def tile(masks: list[np.ndarray], num_classes: int, columns: int) -> np.ndarray:
    """Class-id masks -> one grey uint8 picture, ``columns`` per row, with a 2-pixel gap."""
    size = masks[0].shape[0]
    rows = (len(masks) + columns - 1) // columns
    canvas = np.full((rows * (size + 2), columns * (size + 2)), 255, np.uint8)
    for i, mask in enumerate(masks):
        r, c = divmod(i, columns)
        grey = mask if mask.dtype != np.uint8 or mask.max() > num_classes - 1 else (mask.astype(np.float32) / (num_classes - 1) * 255).astype(np.uint8)
        canvas[r * (size + 2) : r * (size + 2) + size, c * (size + 2) : c * (size + 2) + size] = grey
    return canvas


def fmt(value: float | None) -> str:
    return f"{value:10.3f}" if value is not None else f"{'-':>10s}"


def grey_uint8(raw: np.ndarray) -> np.ndarray:
    return (np.clip(raw, 0, 1) * 255).round().astype(np.uint8)


def evaluate(name: str, space: str, generator_dir: Path, held_out: torch.Tensor, args: argparse.Namespace) -> tuple[dict, dict]:
    from alignflow.masks.postprocess import PostprocessConfig, mask_statistics, postprocess_steps, raw_invalid_fraction
    from alignflow.masks.synthesis import best_of_k, degenerate_masks, generate_raw_masks, load_mask_generator, mask_features
    from alignflow.models.feature_encoders import build_feature_encoder

    device = resolve_device("auto")
    generator = load_mask_generator(generator_dir, device)
    num_classes = generator.config.num_classes
    post = PostprocessConfig.from_dict({**json.loads(args.postprocess), "num_classes": num_classes})
    seeds = list(range(args.samples))
    started = time.perf_counter()
    raw = generate_raw_masks(generator, seeds, num_steps=args.sample_steps).numpy()
    sample_seconds = (time.perf_counter() - started) / len(seeds)
    steps_per_mask = [postprocess_steps(r, post) for r in raw]
    step_names = [step for step, _ in steps_per_mask[0]]
    result = {"raw_invalid_fraction": raw_invalid_fraction(raw, num_classes), "sample_seconds_per_mask": sample_seconds,
              "postprocess": post.to_dict(), "steps": {}}
    for k, step in enumerate(step_names):
        result["steps"][step] = mask_statistics(np.stack([s[k][1] for s in steps_per_mask]), num_classes)
    # Best of K against held-out real masks.
    encoder = build_feature_encoder("efficientnet-lite0", device=device)
    references = held_out[: args.best_of_k_masks]
    k = args.k
    candidate_raw = generate_raw_masks(generator, list(range(10_000, 10_000 + len(references) * k)), num_steps=args.sample_steps).numpy()
    candidates = torch.from_numpy(np.stack([steps[-1][1] for steps in (postprocess_steps(r, post) for r in candidate_raw)]).astype(np.int64))
    valid = ~degenerate_masks(candidates, 0.005, 0.95)
    features = mask_features(encoder, candidates, num_classes).view(len(references), k, -1)
    choice, similarity = best_of_k(mask_features(encoder, references, num_classes), features, valid.view(len(references), k))
    candidates = candidates.view(len(references), k, *candidates.shape[1:])
    random_similarity = torch.nn.functional.cosine_similarity(features[:, 0], mask_features(encoder, references, num_classes), dim=-1)
    result["best_of_k"] = {"k": k, "masks": len(references), "mean_similarity_best": float(similarity[choice >= 0].mean()),
                           "mean_similarity_first_candidate": float(random_similarity.mean()),
                           "rejected_fraction": float((~valid).float().mean()), "without_valid": int((choice < 0).sum())}
    pictures = {"raw": raw, "steps": steps_per_mask, "references": references, "candidates": candidates, "choice": choice, "num_classes": num_classes}
    return result, pictures


def picture(name: str, pictures_by_space: dict[str, dict], out: Path) -> None:
    """Per space: a row of raw samples, one row per post-processing step; then best-of-K rows (real | chosen | all K)."""
    blocks = []
    for _space, pics in pictures_by_space.items():
        n = 8
        num_classes = pics["num_classes"]
        rows = [[grey_uint8(r) for r in pics["raw"][:n]]]
        for k, (_step, _) in enumerate(pics["steps"][0]):
            rows.append([(pics["steps"][i][k][1].astype(np.float32) / (num_classes - 1) * 255).astype(np.uint8) for i in range(n)])
        blocks.append(tile([m for row in rows for m in row], num_classes, n))
        best_rows = []
        for r in range(min(4, len(pics["references"]))):
            chosen = int(pics["choice"][r])
            cands = [c.numpy().astype(np.uint8) for c in pics["candidates"][r][: n - 2]]
            real = pics["references"][r].numpy().astype(np.uint8)
            best = pics["candidates"][r][chosen].numpy().astype(np.uint8) if chosen >= 0 else np.zeros_like(real)
            best_rows += [real, best] + cands
        blocks.append(tile([(m.astype(np.float32) / (num_classes - 1) * 255).astype(np.uint8) for m in best_rows], num_classes, n))
    gap = np.full((8, blocks[0].shape[1]), 255, np.uint8)
    image = np.concatenate([x for b in blocks for x in (b, gap)][:-1])
    write_image(out, np.repeat(image[..., None], 3, axis=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/bench_masks")
    parser.add_argument("--steps", type=int, default=929, help="training steps of every mask generator")
    parser.add_argument("--pixel-patch", type=int, default=8, help="patch side in pixel space (8: as many tokens as latent space)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--spaces", nargs="+", default=["latent", "pixel"], choices=["latent", "pixel"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--sample-steps", type=int, default=28)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--best-of-k-masks", type=int, default=16)
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--postprocess", default="{}", help="PostprocessConfig options as JSON (default: its defaults)")
    parser.add_argument("--label", default="default", help="name of this post-processing setting in the results")
    parser.add_argument("--images", default="docs/images")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results_masks.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.datasets:
        folder = scan_dataset(shared_data() / DATASETS[name])
        train_idx, test_idx = split_indices(len(folder.pairs), [0.9, 0.1], seed=0)
        source = train_masks_folder(work, name, train_idx)
        generators = {space: train(source, work, name, space, args) for space in args.spaces}
        if args.train_only:
            continue
        from alignflow.masks.postprocess import mask_statistics

        held_out = load_masks([folder.pairs[int(i)].mask for i in test_idx], 128)
        real_stats = mask_statistics(held_out.numpy().astype(np.uint8), folder.num_classes)
        results.setdefault(name, {})["real"] = real_stats
        pictures = {}
        for space, generator_dir in generators.items():
            summary = json.loads((generator_dir.parent / "summary.json").read_text())
            result, pictures[space] = evaluate(name, space, generator_dir, held_out, args)
            result["train"] = {"steps": summary["steps"], "seconds": summary["seconds"]}
            results[name].setdefault(space, {})[args.label] = result
            print(f"\n{name} / {space}: {summary['steps']} steps in {summary['seconds'] / 60:.1f} min; raw invalid pixels {result['raw_invalid_fraction']:.4f}")
            print(f"  {'':14s} {'class':>5s} {'multi-comp':>10s} {'roughness':>10s} {'empty':>6s}")
            for step, stats in [*result["steps"].items(), ("real", real_stats)]:
                for c, per_class in stats["classes"].items():
                    print(f"  {step:14s} {c:>5} {fmt(per_class['multi_component_fraction'])} {fmt(per_class['roughness_mean'])} {stats['empty_fraction']:6.3f}")
            print(f"  best of {args.k}: similarity {result['best_of_k']['mean_similarity_best']:.3f} vs first candidate {result['best_of_k']['mean_similarity_first_candidate']:.3f}")
        suffix = "" if args.label == "default" else f"_{args.label}"
        picture(name, pictures, Path(args.images) / f"masks_{name}{suffix}.png")
        results_path.write_text(json.dumps(results, indent=2))
    print(f"\nresults in {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
