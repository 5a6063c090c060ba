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

from alignflow import __version__
from alignflow.atomic import atomic_write_json
from alignflow.config import DictConfig
from alignflow.data import (
    list_images,
    load_reference_images,
    scan_dataset,
    select_references,
)
from alignflow.device import resolve_device
from alignflow.generator.config import TrainConfig
from alignflow.generator.pairs import generate_pairs
from alignflow.generator.sampling import load_generator
from alignflow.generator.training import train
from alignflow.runs.events import EventLog, Listener


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


def _export(config: AugmentConfig, out: Path, report: dict[str, Any], log: EventLog) -> Path:
    """Real source pairs + every aligned synthetic set, in the chosen training-set format."""
    from alignflow.export import export_dataset

    synthetic = [Path(entry["pairs"]) for name, entry in report["models"].items() if name.startswith("aligned")]
    name = config.export_name + (".ome.zarr" if config.export_format == "ome-zarr" else "")
    return export_dataset(
        out / "export" / name, real=config.source, synthetic=synthetic, export_format=config.export_format,
        overwrite=True, on_progress=log.progress,
    )


def _synthesize_masks(config: AugmentConfig, out: Path, listeners: list[Listener] | None, resume: bool) -> list[tuple[str, Path]]:
    """Train the mask generator on the source masks, keep the best of K per source mask; (stem, mask file) pairs."""
    from alignflow.masks.synthesis import MaskSynthesisConfig, synthesize_masks
    from alignflow.masks.training import MaskTrainConfig, train_mask_generator

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
        log.emit("progress", stage=f"generate:{name}", step=0, total=len(chosen))
        pairs = generate_pairs(
            generator, [path for _, path in chosen], out / "synthetic" / name, stems=[stem for stem, _ in chosen],
            evaluator=evaluator, seed=config.seed, num_steps=config.sample_steps, guidance_scale=config.guidance_scale,
            precision=config.precision,
            on_progress=lambda _, done, total, n=name: log.progress(f"generate:{n}", done, total),
        )
        images, pairs_dir = pairs.images, pairs.folder
        if kid_to_target is None:
            from alignflow.metrics.kid import KernelInceptionDistanceTo

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
            from alignflow.fidelity.metric import fidelity_report

            report["models"][name]["mask_fidelity"] = fidelity_report(evaluator, pairs.scores, ceiling, config.masks or config.source)
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
    from alignflow.fidelity.metric import score_real_dataset
    from alignflow.fidelity.segmenter import check_independent, load_segmenter

    evaluator = load_segmenter(config.evaluator, device)
    if config.train.get("mask_segmenter") and config.train.get("w_mask", 0) > 0:
        check_independent(evaluator, load_segmenter(config.train["mask_segmenter"], device))
    return evaluator, score_real_dataset(evaluator, Path(config.masks or config.source), limit=count)


def format_report(report: dict[str, Any]) -> str:
    from alignflow.fidelity.metric import format_fidelity

    lines = [f"KID to the {report['kid_target']} (FID-Inception features; lower is closer to the target):"]
    for name, values in report["models"].items():
        lines.append(f"  {name:8s} KID = {values['kid']:.4f} +- {values['kid_std']:.4f}  ({values['generated']} generated vs {values['target']} target; pairs in {values['pairs']})")
        if values.get("mask_fidelity"):
            lines.append(f"  {'':8s} {format_fidelity(values['mask_fidelity'])}")
    return "\n".join(lines)

