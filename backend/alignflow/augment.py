"""The main job: stage 1, stage 2, generation of image-mask pairs, and a report with KID to the target domain.

``alignflow augment`` and the plugin's one-click run call ``augment()``. Each stage lives in its own run folder under
``out``, so an interrupted job resumes where it stopped (``resume=True``) without redoing finished stages.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .atomic import atomic_directory, atomic_write_json
from .data import list_images, load_masks, load_reference_images, read_mask, resize_to, scan_dataset, select_references, to_uint8, write_image, write_mask
from .device import resolve_device
from .config import DictConfig
from .fidelity.filtering import generate_with_fidelity
from .generation import load_generator
from .training.config import TrainConfig
from .training.events import EventLog, Listener
from .training.trainer import train


@dataclass
class AugmentConfig(DictConfig):
    """Everything ``alignflow augment`` needs; the defaults suit a 2-core CPU."""

    source: str = ""
    references: str = ""
    out: str = ""
    num_references: int | None = 10
    target: str | None = None  # target-domain images for KID (default: the references)
    masks: str | None = None  # dataset folder whose masks are turned into images (default: the source)
    num_generated: int | None = None  # at most this many masks (default: all)
    resolution: int = 128
    stage1_steps: int = 1000
    stage2_steps: int = 200
    batch_size: int = 8
    sample_steps: int = 28  # the paper's 28 Euler steps
    guidance_scale: float = 2.0
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    max_pairs: int | None = None
    # Mask synthesis (Section 3.3): this many new masks (best of ``mask_candidates`` each) also become images.
    synthetic_masks: int = 0
    mask_steps: int = 1500  # mask generator training steps
    mask_candidates: int = 8
    postprocess: dict[str, Any] = field(default_factory=dict)  # PostprocessConfig options
    mask_generator: dict[str, Any] = field(default_factory=dict)  # MaskGeneratorConfig overrides
    # The augmented training set (real source pairs + aligned synthetic pairs): "nnunet", "folders", "ome-zarr" or None.
    export_format: str | None = "nnunet"
    export_name: str = "Dataset500_AlignFlow"
    generator: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # extra TrainConfig options for both stages
    # Mask fidelity (docs/label-drift.md): an evaluator segmenter (alignflow train-evaluator) scores every generated
    # image against its mask, in the report and in each manifest row.
    evaluator: str | None = None

    def stage_config(self, stage: int) -> TrainConfig:
        out = Path(self.out)
        common = dict(
            source=self.source, seed=self.seed, device=self.device, precision=self.precision,
            batch_size=self.batch_size, max_pairs=self.max_pairs, **self.train,
        )
        if stage == 1:
            return TrainConfig(stage=1, out=str(out / "stage1"), steps=self.stage1_steps,
                               generator={"resolution": self.resolution, **self.generator}, **common)
        return TrainConfig(stage=2, out=str(out / "stage2"), steps=self.stage2_steps, init=str(out / "stage1"),
                           references=self.references, num_references=self.num_references, **common)


def _masks_to_generate(config: AugmentConfig) -> list[tuple[str, Path]]:
    folder = scan_dataset(Path(config.masks or config.source))
    pairs = folder.pairs[: config.num_generated] if config.num_generated else folder.pairs
    return [(pair.stem, pair.mask) for pair in pairs]


def write_synthetic_pairs(
    out: Path, stems: list[str], images: torch.Tensor, mask_paths: list[Path], seeds: list[int], provenance: dict[str, Any],
    per_image: list[dict[str, Any]] | None = None,
) -> Path:
    """``out/images`` + ``out/masks`` at each mask's original size, plus ``manifest.json``; all or nothing.

    ``per_image`` adds fields to each image's manifest row (e.g. its mask-fidelity scores).
    """
    rows = []
    extras = per_image if per_image is not None else [{} for _ in stems]
    with atomic_directory(out) as tmp:
        for stem, image, mask_path, seed, extra in zip(stems, images, mask_paths, seeds, extras):
            mask = read_mask(mask_path)
            write_image(tmp / "images" / f"{stem}.png", resize_to(to_uint8(image), mask.shape))
            write_mask(tmp / "masks" / f"{stem}.png", mask, binary_as_255=int(mask.max()) <= 1)
            rows.append({"stem": stem, "synthetic": True, "seed": seed, "source_mask": str(mask_path), **provenance, **extra})
        atomic_write_json(tmp / "manifest.json", rows)
    return out


def generation_provenance(generator: Any, guidance_scale: float, sample_steps: int) -> dict[str, Any]:
    """What a manifest row needs to regenerate an image: generator (and the hash of its weights), references, sampling."""
    from .export.manifest import software_versions
    from .training.checkpoint import MODEL_FILE
    from .weights import file_sha256

    return {"generator": str(generator.folder), "checkpoint_sha256": file_sha256(_weights_file(generator.folder, MODEL_FILE)),
            "references": generator.info.get("references", []), "guidance_scale": guidance_scale,
            "sample_steps": sample_steps, "software": software_versions()}


def _weights_file(folder: Path, name: str) -> Path:
    return folder / "generator" / name if (folder / "generator" / name).exists() else folder / name


def _export(config: AugmentConfig, out: Path, report: dict[str, Any], log: EventLog) -> Path:
    """Real source pairs + every aligned synthetic set, in the chosen training-set format."""
    from .export import export_dataset

    synthetic = [Path(entry["pairs"]) for name, entry in report["models"].items() if name.startswith("aligned")]
    name = config.export_name + (".ome.zarr" if config.export_format == "ome-zarr" else "")
    return export_dataset(
        out / "export" / name, real=config.source, synthetic=synthetic, export_format=config.export_format,
        overwrite=True, on_progress=lambda done, total: log.emit("progress", stage="export", step=done, total=total),
    )


def _synthesize_masks(config: AugmentConfig, out: Path, listeners: list[Listener] | None, resume: bool) -> list[tuple[str, Path]]:
    """Train the mask generator on the source masks, keep the best of K per source mask; (stem, mask file) pairs."""
    from .masks.synthesis import MaskSynthesisConfig, synthesize_masks
    from .masks.training import MaskTrainConfig, train_mask_generator

    mask_run = MaskTrainConfig(
        source=config.source, out=str(out / "mask_generator"), steps=config.mask_steps, batch_size=config.batch_size,
        max_pairs=config.max_pairs, seed=config.seed, device=config.device, precision=config.precision,
        generator={"resolution": config.resolution, **config.mask_generator},
    )
    generator = train_mask_generator(mask_run, listeners, resume=resume)
    synthesis = MaskSynthesisConfig(
        generator=str(generator), masks=config.masks or config.source, out=str(out / "synthetic_masks"),
        num_masks=config.synthetic_masks, candidates=config.mask_candidates, postprocess=config.postprocess,
        seed=config.seed, device=config.device, precision=config.precision,
    )
    report = synthesize_masks(synthesis, listeners)
    return [(path.stem, path) for path in sorted(Path(report["masks"]).glob("*.png"))]


def augment(config: AugmentConfig, listeners: list[Listener] | None = None, resume: bool = True) -> dict[str, Any]:
    """Run the whole job and return (and write to ``out/report.json``) its report."""
    out = Path(config.out)
    log = EventLog(out, listeners)
    device = resolve_device(config.device)
    started = time.perf_counter()
    # Check the cheap things before hours of training: the references and the masks to generate from.
    references = select_references(Path(config.references), config.num_references, config.seed)
    target_paths = list_images(Path(config.target)) if config.target else references
    masks = _masks_to_generate(config)
    evaluator, ceiling = _fidelity_evaluator(config, len(masks), device)
    stage1 = train(config.stage_config(1), listeners, resume=resume)
    stage2 = train(config.stage_config(2), listeners, resume=resume)
    report: dict[str, Any] = {"version": __version__, "python": platform.python_version(), "torch": torch.__version__,
                              "device": str(device), "config": asdict(config), "models": {}}
    masks_by_model = [("stage1", stage1, masks), ("aligned", stage2, masks)]
    if config.synthetic_masks > 0:
        synthetic = _synthesize_masks(config, out, listeners, resume)
        if synthetic:
            masks_by_model.append(("aligned_synthetic_masks", stage2, synthetic))
        else:
            log.emit("warning", message="no synthetic mask passed the degenerate-mask rule; none were turned into images")
    kid_to_target = None
    for name, folder, chosen in masks_by_model:
        generator = load_generator(folder, device)
        resolution = generator.config.resolution
        mask_ids = load_masks([path for _, path in chosen], resolution)
        log.emit("progress", stage=f"generate:{name}", step=0, total=len(chosen))
        generated = generate_with_fidelity(
            generator, mask_ids, evaluator=evaluator, seed=config.seed, num_steps=config.sample_steps,
            guidance_scale=config.guidance_scale, precision=config.precision,
            on_progress=lambda done, total, n=name: log.emit("progress", stage=f"generate:{n}", step=done, total=total),
        )
        images, seeds = generated.images, generated.seeds
        provenance = generation_provenance(generator, config.guidance_scale, config.sample_steps)
        pairs_dir = write_synthetic_pairs(out / "synthetic" / name, [s for s, _ in chosen], images, [p for _, p in chosen],
                                          seeds, provenance, generated.rows)
        if kid_to_target is None:
            from .metrics.kid import KernelInceptionDistanceTo

            subset = min(len(chosen), len(target_paths), 100)
            kid_to_target = KernelInceptionDistanceTo(load_reference_images(target_paths, resolution), subset, device=device)
        subset = min(len(images), kid_to_target.subset_size)
        kid, kid_std = kid_to_target(images, subset) if subset >= 2 else (float("nan"), float("nan"))
        report["models"][name] = {
            "generator": str(folder), "pairs": str(pairs_dir), "train_seconds": generator.info.get("train_seconds"),
            "kid": kid, "kid_std": kid_std, "subset_size": subset, "generated": len(images),
            "target": len(target_paths),
        }
        if evaluator is not None:
            from .fidelity.metric import fidelity_report

            report["models"][name]["mask_fidelity"] = fidelity_report(evaluator, generated.scores, ceiling, config.masks or config.source)
    if config.export_format:
        report["export"] = str(_export(config, out, report, log))
    report["kid_target"] = "target images" if config.target else "reference images"
    report["seconds"] = time.perf_counter() - started
    atomic_write_json(out / "report.json", report)
    log.emit("done", stage="augment", report=str(out / "report.json"),
             kid_stage1=report["models"]["stage1"]["kid"], kid_aligned=report["models"]["aligned"]["kid"])
    return report


def _fidelity_evaluator(config: AugmentConfig, count: int, device: torch.device) -> tuple[Any, Any]:
    """The evaluator (when configured) and its ceiling on the real pairs whose masks are generated from."""
    if not config.evaluator:
        return None, None
    from .fidelity.metric import score_real_dataset
    from .fidelity.segmenter import check_independent, load_segmenter

    evaluator = load_segmenter(config.evaluator, device)
    if config.train.get("mask_segmenter") and config.train.get("w_mask", 0) > 0:
        check_independent(evaluator, load_segmenter(config.train["mask_segmenter"], device))
    return evaluator, score_real_dataset(evaluator, Path(config.masks or config.source), limit=count)


def format_report(report: dict[str, Any]) -> str:
    from .fidelity.metric import format_fidelity

    lines = [f"KID to the {report['kid_target']} (FID-Inception features; lower is closer to the target):"]
    for name, values in report["models"].items():
        lines.append(f"  {name:8s} KID = {values['kid']:.4f} +- {values['kid_std']:.4f}  ({values['generated']} generated vs {values['target']} target; pairs in {values['pairs']})")
        if values.get("mask_fidelity"):
            lines.append(f"  {'':8s} {format_fidelity(values['mask_fidelity'])}")
    return "\n".join(lines)

