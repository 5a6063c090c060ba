"""Reference advisor on real data: cold/warm time on CVC-ClinicDB, its k-curve, the shift verdicts, advised references.

    python benchmarks/reference_advisor.py --work runs/bench

Uses the splits of benchmarks/kvasir_to_clinicdb.py (same ``--work`` folder, same seed): target = the CVC-ClinicDB
reference pool (frames 1-306), source = the 900 Kvasir-SEG training pairs. Writes ``<work>/advised_references.json``
(a JSON list of the 10 advised files of the pool, for ``TrainConfig.references``) and ``<work>/advice_pool/`` (report,
plot, thumbnails), and prints every number docs/benchmarks.md quotes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kvasir_to_clinicdb import SHARED, prepare_splits  # noqa: E402 - the lead's benchmark defines the splits

from alignflow.advisor import advise_references, extract_features  # noqa: E402
from alignflow.advisor.report import format_summary  # noqa: E402
from alignflow.advisor.selection import gram_matrix, natural_key, subset_mmd  # noqa: E402
from alignflow.data import list_images, select_references  # noqa: E402


def timed(label: str, **kwargs) -> object:
    started = time.perf_counter()
    advice = advise_references(**kwargs)
    print(f"{label}: {time.perf_counter() - started:.1f} s (features {advice.seconds['features']} s, "
          f"selection {advice.seconds['selection']} s; {advice.settings['features_computed']} computed, "
          f"{advice.settings['features_cached']} cached)")
    return advice


def verdict_line(label: str, advice) -> None:
    shift = advice.shift
    ratio = "n/a" if shift.ratio is None else f"{shift.ratio:.1f}"
    print(f"{label:58s} MMD² {shift.mmd:+.5f}  noise floor {shift.noise:.5f}  ratio {ratio:>6s}  -> {shift.verdict}")


def planted_outliers(clinic: Path, resolution: int, cache: Path, k: int) -> None:
    """Ranks of planted strangers among the 612 frames: the Gaussian witness the advisor uses vs the polynomial one."""
    import torch
    from PIL import Image, ImageFilter

    from alignflow.advisor.selection import criticisms, herd_prototypes
    from alignflow.data import read_image

    frames = sorted(list_images(clinic / "images"), key=lambda p: natural_key(p.name))
    frame = read_image(frames[99])
    strangers = {
        "black frame": np.full_like(frame, 2),
        "frame 100 blurred (Gaussian, radius 8)": np.asarray(Image.fromarray(frame).filter(ImageFilter.GaussianBlur(8))),
        "Drishti-GS fundus image": read_image(sorted((SHARED / "data" / "Drishti-GS_roi" / "images").iterdir())[0]),
        "DRIVE fundus image": read_image(sorted((SHARED / "data" / "DRIVE_vessels" / "images").iterdir())[0]),
    }
    real = extract_features(frames, resolution=resolution, cache_dir=cache).values
    planted = extract_features(list(strangers.values()), resolution=resolution, use_cache=False).values
    features = torch.cat([real, planted])
    gram = gram_matrix(features)
    picks, _ = herd_prototypes(gram, k)
    polynomial_witness = (gram.mean(dim=1) - gram[:, picks].mean(dim=1)).abs()  # Kim et al. Eq. 4, |w|
    polynomial_witness[picks] = -1.0
    polynomial_order = torch.argsort(polynomial_witness, descending=True).tolist()
    gaussian = criticisms(features, len(features) - k, exclude=picks)
    gaussian_order = [c.index for c in gaussian]
    print(f"{'planted among 612 frames (rank of 612 + 4, 1 = first)':44s} {'Gaussian witness':>17s} {'robust z':>9s} {'polynomial |w|':>15s}")
    for offset, name in enumerate(strangers):
        index = len(real) + offset
        critic = gaussian[gaussian_order.index(index)]
        print(f"{name:44s} {gaussian_order.index(index) + 1:17d} {critic.robust_z:9.1f} {polynomial_order.index(index) + 1:15d}")
    print(f"flagged as outliers (robust z > 3.5): {sum(c.outlier for c in gaussian)}")
    kvasir = advise_references(SHARED / "data" / "Kvasir-SEG", k, resolution=resolution, cache_dir=cache, out=cache.parent / "advice_kvasir")
    print("Kvasir-SEG (1000), worst explained:", ", ".join(f"{o['name']} (z {o['robust_z']:.1f})" for o in kvasir.outliers[:5]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--group-size", type=int, default=20, help="frame runs for the grouped noise floor")
    args = parser.parse_args()
    work = Path(args.work)
    splits = prepare_splits(work, args.seed)
    cache = work / "advisor_cache"
    common = dict(resolution=args.resolution, seed=args.seed, device="cpu")

    clinic = SHARED / "data" / "CVC-ClinicDB"
    print("== time to advise on all 612 CVC-ClinicDB images (k = 10, no source)")
    with tempfile.TemporaryDirectory() as cold_cache:
        timed("cold cache", target=clinic, k=args.k, cache_dir=cold_cache, **common)
        whole = timed("warm cache", target=clinic, k=args.k, cache_dir=cold_cache, out=work / "advice_clinicdb", **common)
        shutil.copytree(cold_cache, cache, dirs_exist_ok=True)
    print(format_summary(whole))

    print("\n== k-curve, all 612 CVC-ClinicDB images: MMD² (biased) of k images to the whole set")
    print(f"{'k':>4s} {'advised':>9s} {'random 10%':>11s} {'median':>9s} {'90%':>9s}")
    for point in whole.curve:
        print(f"{point.k:4d} {point.chosen:9.5f} {point.random.low:11.5f} {point.random.median:9.5f} {point.random.high:9.5f}")
    floor = whole.noise_floor.between_halves
    print(f"noise floor (two random halves): {floor.median:.5f} [{floor.low:.5f}, {floor.high:.5f}]; enough: k = {whole.enough_k}")

    print("\n== planted outliers")
    planted_outliers(clinic, args.resolution, cache, args.k)

    print("\n== the reference pool (frames 1-306) with Kvasir-SEG (900 training images) as the source")
    pool = timed("pool + source", target=splits["reference_pool"], k=args.k, source=splits["train"] / "images",
                 cache_dir=cache, out=work / "advice_pool", **common)
    print(format_summary(pool))
    (work / "advised_references.json").write_text(json.dumps(pool.references, indent=2) + "\n")
    print(f"advised references written to {work / 'advised_references.json'}")
    pool_files = sorted(list_images(splits["reference_pool"]), key=lambda p: natural_key(p.name))
    gram = gram_matrix(extract_features(pool_files, resolution=args.resolution, cache_dir=cache).values)
    position = {path: i for i, path in enumerate(pool_files)}
    advised = [position[Path(p)] for p in pool.references]
    print(f"MMD²(10 references, pool): advised {subset_mmd(gram, advised):.5f}", end="")
    for seed in range(3):  # the draws benchmarks/kvasir_to_clinicdb.py makes with --seed 0, 1, 2
        drawn = [position[p] for p in select_references(splits["reference_pool"], args.k, seed)]
        print(f"; random seed {seed} {subset_mmd(gram, drawn):.5f}", end="")
    print(f"; random median over 200 draws {pool.curve[[p.k for p in pool.curve].index(args.k)].random.median:.5f}")

    print("\n== is alignment needed? (target = second argument)")
    verdict_line("Kvasir-SEG train (900) vs ClinicDB pool (306)", pool)
    frames = sorted(list_images(clinic / "images"), key=lambda p: natural_key(p.name))
    order = np.random.default_rng(args.seed).permutation(len(frames))
    random_a, random_b = [frames[i] for i in sorted(order[:306])], [frames[i] for i in sorted(order[306:])]
    halves = {
        "ClinicDB random frames A vs B (306 / 306)": (random_a, random_b, 1),
        "ClinicDB frames 1-306 vs 307-612": (frames[:306], frames[306:], 1),
        f"ClinicDB frames 1-306 vs 307-612, floor by runs of {args.group_size}": (frames[:306], frames[306:], args.group_size),
        f"ClinicDB random frames A vs B, floor by runs of {args.group_size}": (random_a, random_b, args.group_size),
    }
    for label, (source, target, group_size) in halves.items():
        advice = advise_references(target, args.k, source=source, cache_dir=cache, group_size=group_size, **common)
        verdict_line(label, advice)
    grouped = advise_references(splits["reference_pool"], args.k, source=splits["train"] / "images", cache_dir=cache,
                                group_size=args.group_size, **common)
    verdict_line(f"Kvasir-SEG train vs ClinicDB pool, floor by runs of {args.group_size}", grouped)
    kvasir_all = advise_references(clinic, args.k, source=SHARED / "data" / "Kvasir-SEG", cache_dir=cache, **common)
    verdict_line("Kvasir-SEG all (1000) vs ClinicDB all (612)", kvasir_all)


if __name__ == "__main__":
    main()
