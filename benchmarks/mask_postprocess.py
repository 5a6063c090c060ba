"""Speed of the mask post-processing chain (what the napari sliders re-run), fast path vs plain scikit-image.

Raw masks are built from real masks so their shapes and sizes are those of the data: Kvasir-SEG (binary polyps) and
Drishti-GS_roi (3 classes: background, disc rim, cup), taken at evenly spaced positions of each dataset, rendered to
grey levels c / (K - 1), resized to 512 px with bicubic filtering (soft edges with slight over- and undershoot) and
corrupted like a generator's output: a random displacement field of a few pixels that makes edges jagged, blotchy
and slow intensity noise, white noise, speckle (isolated pixels anywhere in [-0.4, 1.4], so also outside the valid
range) and a few small spurious blobs and holes at random class levels.

Both implementations run the same chain (alignflow.masks.postprocess) on the same masks, interleaved so a change in
machine load hits both alike. The table gives milliseconds per mask for one full chain on one thread: wall-clock
median and 90th percentile, and the median of the thread's CPU time, which a busy shared machine inflates less. Then
the agreement of the two implementations, and shape statistics before and after post-processing.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/mask_postprocess.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

from alignflow.data import read_mask, resize_mask, resize_to
from alignflow.masks.postprocess import (
    PostprocessConfig,
    mask_statistics,
    postprocess_mask,
    postprocess_steps,
    raw_invalid_fraction,
)

SHARED = Path(os.environ.get("ALIGNFLOW_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATASETS = (("Kvasir-SEG", 2), ("Drishti-GS_roi", 3))


def real_masks(name: str, count: int, size: int) -> np.ndarray:
    """``count`` masks spread evenly over the dataset's sorted files, as class ids resized to ``size`` (nearest)."""
    files = sorted((SHARED / "data" / name / "masks").iterdir())
    chosen = np.linspace(0, len(files) - 1, count).round().astype(int)
    return np.stack([resize_mask(read_mask(files[i]), size) for i in chosen])


def corrupt(ids: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A generator-like raw grey mask (float32) from class ids, at the ids' size (see module docstring)."""
    size = ids.shape[0]
    spacing = 1.0 / (num_classes - 1)
    # Soft edges: render at half size and upsample bicubically, as a decoder's output is smooth at the pixel scale.
    half = resize_mask(ids.astype(np.uint8), size // 2).astype(np.float32) * spacing
    grey = resize_to(half, (size, size), kind="image").astype(np.float32)

    def correlated(sigma: float, amplitude: float) -> np.ndarray:
        field = ndi.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma)
        return field * (amplitude / (field.std() + 1e-12))

    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    # Jagged edges: a random displacement field of a few pixels, varying over a few pixels along the boundary.
    grey = ndi.map_coordinates(grey, [yy + correlated(2.0, 2.5), xx + correlated(2.0, 2.5)], order=1, mode="nearest")
    grey += correlated(1.5, 0.15 * spacing)  # blotchy intensity noise
    grey += correlated(40.0, 0.08 * spacing)  # slow bias
    grey += rng.normal(0.0, 0.03 * spacing, grey.shape).astype(np.float32)
    speckle = rng.random(grey.shape) < 0.002
    grey[speckle] = rng.uniform(-0.4, 1.4, int(speckle.sum()))
    for _ in range(rng.integers(4, 13)):  # spurious blobs, and holes where they land on foreground
        cy, cx, radius = rng.integers(0, size), rng.integers(0, size), rng.uniform(2.0, 6.0)
        grey[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = rng.integers(0, num_classes) * spacing
    return grey


def timed(raw: np.ndarray, config: PostprocessConfig, implementation: str) -> tuple[float, float, np.ndarray]:
    """Wall and thread-CPU milliseconds of one chain, and its output."""
    start, start_cpu = time.perf_counter(), time.thread_time()
    ids = postprocess_mask(raw, config, implementation=implementation)
    return (time.perf_counter() - start) * 1e3, (time.thread_time() - start_cpu) * 1e3, ids


def foreground_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a > 0, b > 0).sum()
    return float(np.logical_and(a > 0, b > 0).sum() / union) if union else 1.0


def shape_row(masks: np.ndarray, num_classes: int, grey_maps: np.ndarray) -> dict[str, float | None]:
    stats = mask_statistics(masks, num_classes)
    row: dict[str, float | None] = {"empty": stats["empty_fraction"]}
    for class_id, values in stats["classes"].items():
        row[f"multi_{class_id}"] = values["multi_component_fraction"]
        row[f"rough_{class_id}"] = values["roughness_mean"]
    row["off_level"] = raw_invalid_fraction(grey_maps, num_classes)
    return row


def run(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    results: dict = {"load_before": os.getloadavg(), "args": vars(args), "datasets": {}}
    for name, num_classes in DATASETS:
        config = PostprocessConfig(
            num_classes=num_classes, sigma=args.sigma, opening_radius=args.radius, closing_radius=args.radius,
            min_area=args.min_area, fill_holes=True,
        )
        masks = real_masks(name, args.masks, args.size)
        raws = [corrupt(ids, num_classes, rng) for ids in masks]
        times: dict[str, list[float]] = {"scikit-image": [], "fast": []}
        cpu_times: dict[str, list[float]] = {"scikit-image": [], "fast": []}
        outputs: dict[str, list[np.ndarray]] = {"scikit-image": [], "fast": []}
        for raw in raws:  # warm-up, and the outputs compared below
            for implementation in times:
                outputs[implementation].append(timed(raw, config, implementation)[2])
        for _ in range(args.repeats):
            for raw in raws:
                for implementation in times:
                    wall, cpu, _ = timed(raw, config, implementation)
                    times[implementation].append(wall)
                    cpu_times[implementation].append(cpu)
        fast, reference = np.stack(outputs["fast"]), np.stack(outputs["scikit-image"])
        thresholded = np.stack([postprocess_steps(raw, config)[0][1] for raw in raws])
        spacing = 1.0 / (num_classes - 1)
        results["datasets"][name] = {
            "num_classes": num_classes,
            "config": config.to_dict(),
            "ms": {
                implementation: {
                    "median": float(np.median(values)),
                    "p90": float(np.percentile(values, 90)),
                    "cpu_median": float(np.median(cpu_times[implementation])),
                }
                for implementation, values in times.items()
            },
            "identical_masks": float(np.mean([np.array_equal(a, b) for a, b in zip(fast, reference)])),
            "min_foreground_iou": min(foreground_iou(a, b) for a, b in zip(fast, reference)),
            "shape": {  # off_level of the grey maps: the raw masks themselves, the others rendered from ids
                "real": shape_row(masks, num_classes, masks * spacing),
                "raw (thresholded)": shape_row(thresholded, num_classes, np.stack(raws)),
                "post-processed": shape_row(fast, num_classes, fast * spacing),
            },
        }
    results["load_after"] = os.getloadavg()
    return results


def print_tables(results: dict) -> None:
    args = results["args"]
    print(f"{args['masks']} masks per dataset at {args['size']} px, {args['repeats']} timed repeats each; "
          f"sigma {args['sigma']}, opening/closing radius {args['radius']}, min_area {args['min_area']}, fill holes")
    print(f"load average before {results['load_before'][0]:.2f}, after {results['load_after'][0]:.2f}\n")
    print("milliseconds per mask, wall clock (median, p90) and thread CPU time (median)")
    header = ("dataset", "classes", "skimage", "p90", "cpu", "fast", "p90", "cpu", "speed-up", "identical", "min IoU")
    print(f"{header[0]:16s}" + "".join(f"{label:>10s}" for label in header[1:]))
    for name, entry in results["datasets"].items():
        ref, fast = entry["ms"]["scikit-image"], entry["ms"]["fast"]
        cells = [f"{entry['num_classes']}"]
        cells += [f"{timing[key]:.2f}" for timing in (ref, fast) for key in ("median", "p90", "cpu_median")]
        cells += [f"{ref['median'] / fast['median']:.1f}x", f"{entry['identical_masks']:.0%}"]
        cells += [f"{entry['min_foreground_iou']:.4f}"]
        print(f"{name:16s}" + "".join(f"{cell:>10s}" for cell in cells))
    print("\nshape statistics (multi_c: fraction of masks where class c has > 1 component; rough_c: mean "
          "perimeter^2 / (4 pi area); off_level: fraction of pixels > 0.25 level spacings from every class level)")
    for name, entry in results["datasets"].items():
        print(f"\n{name}")
        columns = list(next(iter(entry["shape"].values())))
        print(f"{'':20s}" + "".join(f"{c:>11s}" for c in columns))
        for label, row in entry["shape"].items():
            cells = "".join(f"{'-' if row[c] is None else format(row[c], '.3f'):>11s}" for c in columns)
            print(f"{label:20s}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=24, help="real masks per dataset")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of each mask and implementation")
    parser.add_argument("--sigma", type=float, default=1.5)
    parser.add_argument("--radius", type=int, default=3, help="opening and closing disk radius")
    parser.add_argument("--min-area", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = run(args)
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
