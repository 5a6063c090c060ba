"""The main job: stage 1, stage 2, generation of image-mask pairs, and a report with KID to the target domain.

``method`` picks what makes the new pairs (``augment.methods``): generation from noise (the default), translation of
the real source images, or the cheap alternatives (FDA, histogram matching, photometric augmentation), several at
once to compare them in one report against the same references. Generators are trained only for generate/translate.

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
from alignflow.augment.methods import DEFAULT_FDA_BETA, GENERATIVE_METHODS, TRANSFORM_METHODS, check_beta, check_methods
from alignflow.config import DictConfig, section
from alignflow.data import (
    list_images,
    load_reference_images,
    scan_dataset,
    select_references,
)
from alignflow.device import resolve_device
from alignflow.errors import InputError
from alignflow.generator.config import TrainConfig
from alignflow.generator.pairs import GeneratedPairs, generate_pairs
from alignflow.generator.sampling import load_generator
from alignflow.generator.training import train
from alignflow.runs.events import EventLog, Listener
from alignflow.runs.outputs import check_output_folder, mark_output


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
    postprocess: dict[str, Any] = field(default_factory=dict, metadata=section("alignflow.masks.postprocess:PostprocessConfig"))
    mask_generator: dict[str, Any] = field(default_factory=dict, metadata=section("alignflow.masks.model:MaskGeneratorConfig"))
    # The augmented training set (real source pairs + aligned synthetic pairs): "nnunet", "folders", "ome-zarr" or None.
    export_format: str | None = "nnunet"
    export_name: str = "Dataset500_AlignFlow"
    # Cases repeated so that the generated sets make this share of the export, each set an equal part (export.md); None:
    # every pair once.
    export_share: float | None = None
    generator: dict[str, Any] = field(default_factory=dict, metadata=section("alignflow.generator.model:GeneratorConfig"))
    train: dict[str, Any] = field(default_factory=dict, metadata=section("alignflow.generator.config:TrainConfig"))  # both stages
    # Mask fidelity (docs/label-drift.md): an evaluator segmenter (alignflow train-evaluator) scores every generated
    # image against its mask, in the report and in each manifest row.
    evaluator: str | None = None
    # How the new pairs are made (augment.methods), one or several to compare: "generate" (images from noise by the
    # stage-1 and aligned generators), "translate" (the same generators translating the real source images at
    # ``strength``), "fda" (Fourier Domain Adaptation towards a random reference, window ``fda_beta``), "histogram"
    # (per-channel histogram matching to a random reference), "photometric" (strong colour/contrast/blur/noise).
    method: list[str] | str = "generate"
    strength: float = 0.5  # translate: 0 keeps the source image, 1 is generation from noise
    fda_beta: float = DEFAULT_FDA_BETA
    # An existing non-empty ``out`` that augment did not write is written into only with ``overwrite`` (runs.outputs);
    # augment's own earlier ``out`` is continued (finished stages reused) either way.
    overwrite: bool = False

    validate_on_load = True

    @property
    def methods(self) -> list[str]:
        return check_methods(self.method)

    def validate(self) -> None:
        from alignflow.generator.sampling import check_strength

        self.method = self.methods
        check_strength(self.strength)
        check_beta(self.fda_beta)
        if self.export_share is not None and not 0.0 < float(self.export_share) < 1.0:
            raise InputError("--export-share", "a fraction in (0, 1): the part of the exported cases that are generated pairs",
                             str(self.export_share))
        name = self.export_name
        if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\:"):
            raise InputError("export_name", "a folder name inside OUT/export (no '/', '\\', ':' or leading '.')", repr(name))
        clash = sorted(set(self.train) & set(self._stage_options(1)) | set(self.train) & {"stage", "out", "init", "references", "num_references", "generator"})
        if clash:
            raise InputError(f"train.{clash[0]}", "an option augment does not set itself (steps, batch size, seed, device ... "
                             "are top-level options: stage1_steps, batch_size, ...)", repr(self.train[clash[0]]))

    def _stage_options(self, stage: int) -> dict[str, Any]:
        return dict(source=self.source, seed=self.seed, device=self.device, precision=self.precision,
                    batch_size=self.batch_size, max_pairs=self.max_pairs,
                    steps=self.stage1_steps if stage == 1 else self.stage2_steps)

    def stage_config(self, stage: int) -> TrainConfig:
        out = Path(self.out)
        common = {**self._stage_options(stage), **self.train}
        if stage == 1:
            return TrainConfig(stage=1, out=str(out / "stage1"), generator={"resolution": self.resolution, **self.generator}, **common)
        return TrainConfig(stage=2, out=str(out / "stage2"), init=str(out / "stage1"),
                           references=self.references, num_references=self.num_references, **common)


def _pairs_to_augment(config: AugmentConfig) -> list[Any]:
    """The real pairs whose masks become images (and whose images are translated or transformed)."""
    folder = scan_dataset(Path(config.masks or config.source))
    return folder.pairs[: config.num_generated] if config.num_generated else folder.pairs


def _export(config: AugmentConfig, out: Path, report: dict[str, Any], log: EventLog) -> Path:
    """Real source pairs + every set of the methods asked for (the aligned generator's, not stage 1's), in the chosen
    training-set format."""
    from alignflow.export import export_dataset

    synthetic = [Path(entry["pairs"]) for entry in report["models"].values() if entry["exported"]]
    name = config.export_name + (".ome.zarr" if config.export_format == "ome-zarr" else "")
    return export_dataset(
        out / "export" / name, real=config.source, synthetic=synthetic, synthetic_share=config.export_share,
        export_format=config.export_format,
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
        seed=config.seed, device=config.device, precision=config.precision, overwrite=True,  # augment's own folder
    )
    report = synthesize_masks(synthesis, listeners)
    return [(path.stem, path) for path in sorted(Path(report["masks"]).glob("*.png"))]


def augment(config: AugmentConfig, listeners: list[Listener] | None = None, resume: bool = True) -> dict[str, Any]:
    """Run the whole job and return (and write to ``out/report.json``) its report."""
    config.validate()
    if not Path(config.references).exists():  # before anything is written to out
        raise InputError("--references", "an existing folder of target-domain reference images", str(config.references))
    out = Path(config.out)
    check_output_folder(out, "augment", inputs={k: v for k, v in config.to_dict().items() if k != "out"},
                        overwrite=config.overwrite, resumable=True)
    out.mkdir(parents=True, exist_ok=True)
    mark_output(out, "augment")
    log = EventLog(out, listeners)
    device = resolve_device(config.device)
    started = time.perf_counter()
    # Check the cheap things before hours of training: the references and the masks to generate from.
    methods = config.methods
    references = select_references(Path(config.references), config.num_references, config.seed)
    target_paths = list_images(Path(config.target)) if config.target else references
    source_pairs = _pairs_to_augment(config)
    masks = [(pair.stem, pair.mask) for pair in source_pairs]
    evaluator, ceiling = _fidelity_evaluator(config, len(masks), device)
    if any(method in GENERATIVE_METHODS for method in methods):
        stage1 = train(config.stage_config(1), listeners, resume=resume)
        stage2 = train(config.stage_config(2), listeners, resume=resume)
    report: dict[str, Any] = {"version": __version__, "python": platform.python_version(), "torch": torch.__version__,
                              "device": str(device), "config": asdict(config), "models": {}}
    # (report name, method, generator, pairs or (stem, mask file)s, exported); generate's sets first, as always
    sets: list[tuple[str, str, Path | None, list[Any], bool]] = []
    if "generate" in methods:
        sets += [("stage1", "generate", stage1, masks, False), ("aligned", "generate", stage2, masks, True)]
        if config.synthetic_masks > 0:
            synthetic = _synthesize_masks(config, out, listeners, resume)
            if synthetic:
                sets.append(("aligned_synthetic_masks", "generate", stage2, synthetic, True))
            else:
                log.emit("warning", message="no synthetic mask passed the degenerate-mask rule; none were turned into images")
    if "translate" in methods:
        sets += [("stage1_translated", "translate", stage1, source_pairs, False),
                 ("aligned_translated", "translate", stage2, source_pairs, True)]
    sets += [(method, method, None, source_pairs, True) for method in methods if method in TRANSFORM_METHODS]
    scorer = None
    for name, method, folder, chosen, exported in sets:
        log.emit("progress", stage=f"generate:{name}", step=0, total=len(chosen))
        set_started = time.perf_counter()
        pairs, entry = _make_set(config, method, folder, chosen, out / "synthetic" / name, evaluator, references, device,
                                 lambda _, done, total, n=name: log.progress(f"generate:{n}", done, total))
        images, pairs_dir = pairs.images, pairs.folder
        if scorer is None:
            from alignflow.augment.scores import SetScorer

            scorer = SetScorer(target_paths, references, images.shape[-1], min(len(chosen), len(target_paths), 100), device)
        report["models"][name] = {
            **entry, "pairs": str(pairs_dir), **scorer(images),
            "generated": len(images), "target": len(target_paths), "method": method, "exported": exported,
            "seconds": time.perf_counter() - set_started,
        }
        if evaluator is not None:
            from alignflow.fidelity.metric import fidelity_report

            report["models"][name]["mask_fidelity"] = fidelity_report(evaluator, pairs.scores, ceiling, config.masks or config.source)
    if methods != ["generate"]:
        # The methods are compared with what they start from: the real source images as they are.
        sources = load_reference_images([pair.image for pair in source_pairs], images.shape[-1])
        report["source"] = {**scorer(sources), "images": len(sources)}
    if config.export_format:
        report["export"] = str(_export(config, out, report, log))
    report["kid_target"] = "target images" if config.target else "reference images"
    from alignflow.augment.advice import advise

    report["advice"] = advise(report)
    report["seconds"] = time.perf_counter() - started
    atomic_write_json(out / "report.json", report)
    log.emit("done", stage="augment", report=str(out / "report.json"),
             **{f"kid_{name}": entry["kid"] for name, entry in report["models"].items()})
    return report


def _make_set(config: AugmentConfig, method: str, generator_folder: Path | None, chosen: list[Any], out: Path,
              evaluator: Any, references: list[Path], device: torch.device, on_progress: Any
              ) -> tuple[GeneratedPairs, dict[str, Any]]:
    """One method's pairs in ``out`` and the report fields that say what made them."""
    from alignflow.augment.methods import transform_pairs, translate_pairs

    if generator_folder is None:
        pairs = transform_pairs(method, chosen, out, references=references, beta=config.fda_beta, seed=config.seed,
                                resolution=config.resolution, on_progress=on_progress,
                                overwrite=True)  # augment's own folder: a resumed job writes it again
        if evaluator is not None:
            from alignflow.data import load_masks
            from alignflow.fidelity.metric import score_images

            masks = load_masks([pair.mask for pair in chosen], config.resolution)
            pairs.scores = score_images(evaluator.model, pairs.images, masks, pairs.stems)
        return pairs, {"generator": None, "train_seconds": None, **({"beta": config.fda_beta} if method == "fda" else {})}
    generator = load_generator(generator_folder, device)
    sampling = dict(evaluator=evaluator, seed=config.seed, num_steps=config.sample_steps,
                    guidance_scale=config.guidance_scale, precision=config.precision,
                    overwrite=True,  # augment's own folder: a resumed job writes it again
                    on_progress=on_progress)
    if method == "translate":
        pairs = translate_pairs(generator, chosen, out, strength=config.strength, **sampling)
    else:
        pairs = generate_pairs(generator, [path for _, path in chosen], out, stems=[stem for stem, _ in chosen], **sampling)
    entry = {"generator": str(generator_folder), "train_seconds": generator.info.get("train_seconds")}
    return pairs, {**entry, **({"strength": config.strength} if method == "translate" else {})}


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
        if "reward_mmd" in values:  # reports written before these scores existed have neither
            lines.append(f"  {'':8s} to the references: KID {values['kid_references']:.4f}, reward MMD {values['reward_mmd']:.4f}")
        if values.get("mask_fidelity"):
            lines.append(f"  {'':8s} {format_fidelity(values['mask_fidelity'])}")
    if report.get("source"):
        source = report["source"]
        lines.append(f"  {'source':8s} KID = {source['kid']:.4f} +- {source['kid_std']:.4f}  (the real source images as they are)")
        ranked = sorted(report["models"].items(), key=lambda item: item[1]["kid"])
        lines.append("closest to the target first: " + ", ".join(f"{name} {values['kid']:.4f}" for name, values in ranked))
    lines += report.get("advice", [])
    return "\n".join(lines)

