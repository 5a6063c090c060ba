"""Mask fidelity: how faithfully generated images follow the masks they were generated from (label drift).

An evaluator segmenter segments each generated image; Dice and IoU against the conditioning mask (MONAI's
``compute_dice`` / ``compute_iou``, foreground classes, averaged per image) are its fidelity. The same evaluator on
real images with their own masks gives the ceiling: a generated image cannot be expected to be segmented better
than a real one. Everything is scored at the evaluator's resolution (images squashed, masks nearest-neighbour).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from alignflow.data import list_images, load_masks, load_pairs, load_reference_images, scan_dataset
from alignflow.errors import InputError
from alignflow.fidelity.segmenter import LoadedSegmenter, Segmenter, load_segmenter


@dataclass
class FidelityScores:
    """Per-image Dice and IoU (in [0, 1]) with the stems they belong to."""

    stems: list[str]
    dice: torch.Tensor
    iou: torch.Tensor

    def summary(self) -> dict[str, Any]:
        return {"count": len(self.stems), "dice": float(self.dice.mean()) if len(self.stems) else None,
                "iou": float(self.iou.mean()) if len(self.stems) else None}

    def rows(self) -> list[dict[str, Any]]:
        return [{"stem": stem, "dice": float(d), "iou": float(i)} for stem, d, i in zip(self.stems, self.dice, self.iou)]


def to_segmenter_resolution(images: torch.Tensor, masks: torch.Tensor | None, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images [N, 3, H, W] (bilinear, antialiased, differentiable) and class ids [N, H, W] (nearest) at ``size``."""
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if masks is not None and masks.shape[-2:] != (size, size):
        masks = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0].long()
    return images, masks


def one_hot_maps(class_ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids [N, H, W] -> one-hot maps [N, C, H, W] (float), the layout MONAI's metrics take."""
    return F.one_hot(class_ids.long(), num_classes).permute(0, 3, 1, 2).float()


def class_overlap(prediction: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dice and IoU [N, C - 1] per image and foreground class of one-hot maps; a class absent from both prediction
    and truth counts 1 (MONAI's ``ignore_empty=False``), one predicted where there is none counts 0."""
    from monai.metrics import compute_dice, compute_iou

    dice = compute_dice(prediction, truth, include_background=False, ignore_empty=False)
    iou = compute_iou(prediction, truth, include_background=False, ignore_empty=False)
    return dice, iou


def overlap_scores(predicted: torch.Tensor, masks: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU of class ids [N, H, W]: the mean over foreground classes (see ``class_overlap``)."""
    dice, iou = class_overlap(one_hot_maps(predicted, num_classes), one_hot_maps(masks, num_classes))
    return dice.mean(dim=1), iou.mean(dim=1)


def score_images(segmenter: Segmenter, images: torch.Tensor, masks: torch.Tensor, stems: list[str] | None = None,
                 batch_size: int = 16) -> FidelityScores:
    """Fidelity of images [N, 3, H, W] in [0, 1] to class-id masks [N, H, W] (any common size)."""
    if images.shape[0] != masks.shape[0]:
        raise InputError("masks", f"one mask per image ({images.shape[0]})", str(masks.shape[0]))
    if masks.numel() and int(masks.max()) >= segmenter.config.num_classes:
        raise InputError("masks", f"class ids below {segmenter.config.num_classes} (the evaluator's classes)", f"id {int(masks.max())}")
    device = next(segmenter.parameters()).device
    images, masks = to_segmenter_resolution(images.float(), masks, segmenter.config.resolution)
    predicted = segmenter.predict(images.to(device), batch_size).cpu()
    dice, iou = overlap_scores(predicted, masks.cpu(), segmenter.config.num_classes)
    return FidelityScores(stems or [str(i) for i in range(len(dice))], dice, iou)


def _image_folder(folder: Path) -> Path:
    return folder / "images" if (folder / "images").is_dir() else folder


def _mask_files(folder: Path) -> dict[str, Path]:
    source = folder / "masks" if (folder / "masks").is_dir() else folder
    return {path.stem: path for path in list_images(source)}


def score_generated_folder(evaluator: LoadedSegmenter, generated: Path, masks: Path) -> FidelityScores:
    """Generated images (a folder, or a pairs folder with images/) against the masks with the same stems."""
    generated, masks = Path(generated), Path(masks)
    if not generated.is_dir():
        raise InputError(generated, "a folder of generated images (or a pairs folder with images/)", "no such folder")
    if not masks.is_dir():
        raise InputError(masks, "a folder of masks (or a dataset folder with masks/)", "no such folder")
    image_paths = list_images(_image_folder(generated))
    if not image_paths:
        raise InputError(generated, "generated images", "none")
    by_stem = _mask_files(masks)
    missing = [path.name for path in image_paths if path.stem not in by_stem]
    if missing:
        raise InputError(masks, f"a mask for every generated image (by file stem) of {generated}",
                         f"{len(missing)} without one, e.g. {missing[:3]}")
    size = evaluator.config.resolution
    images = load_reference_images(image_paths, size)
    mask_ids = load_masks([by_stem[path.stem] for path in image_paths], size)
    return score_images(evaluator.model, images, mask_ids, [path.stem for path in image_paths])


def score_real_dataset(evaluator: LoadedSegmenter, dataset: Path, limit: int | None = None) -> FidelityScores:
    """The ceiling: the evaluator on real images of a dataset folder against their own masks."""
    folder = scan_dataset(Path(dataset))
    count = len(folder) if limit is None else min(limit, len(folder))
    images, masks = load_pairs(folder, evaluator.config.resolution, indices=range(count))
    return score_images(evaluator.model, images, masks, [pair.stem for pair in folder.pairs[:count]])


def fidelity_report(evaluator: LoadedSegmenter, generated: FidelityScores, ceiling: FidelityScores | None,
                    ceiling_source: str | None) -> dict[str, Any]:
    """The report block: which evaluator, generated Dice/IoU, the ceiling and their ratio."""
    summary = generated.summary()
    report: dict[str, Any] = {
        "evaluator": str(evaluator.folder), "evaluator_kind": evaluator.kind,
        "evaluator_architecture": evaluator.config.architecture, **summary,
        "ceiling": None, "ratio_to_ceiling": None,
    }
    if ceiling is not None:
        report["ceiling"] = {"dataset": ceiling_source, **ceiling.summary()}
        if ceiling.summary()["dice"]:
            report["ratio_to_ceiling"] = summary["dice"] / ceiling.summary()["dice"] if summary["dice"] is not None else None
    return report


def evaluate_fidelity(evaluator: str | Path, generated: str | Path, masks: str | Path | None = None,
                      ceiling: str | Path | None = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Mask fidelity of a folder of generated images, with the ceiling on a real dataset folder, and per-image scores.

    ``masks`` defaults to ``generated/masks`` (the pairs folders ``generate`` and ``augment`` write); ``ceiling``
    defaults to ``masks`` when that is a dataset folder (images/ + masks/), i.e. the real images of the same masks.
    """
    generated = Path(generated)
    masks = Path(masks) if masks is not None else generated
    if masks == generated and not (generated / "masks").is_dir():
        raise InputError("--masks", f"the masks the images were generated from ({generated} has no masks/)", "nothing")
    if ceiling is None and (masks / "images").is_dir() and (masks / "masks").is_dir() and masks != generated:
        ceiling = masks
    loaded = load_segmenter(evaluator, device)
    scores = score_generated_folder(loaded, generated, masks)
    real = score_real_dataset(loaded, Path(ceiling)) if ceiling is not None else None
    report = fidelity_report(loaded, scores, real, str(ceiling) if ceiling is not None else None)
    report["per_image"] = scores.rows()
    return report


def format_fidelity(report: dict[str, Any]) -> str:
    """One line for the terminal."""
    line = (f"mask fidelity ({report['evaluator_kind']} evaluator, {report['evaluator_architecture']}): "
            f"Dice {report['dice']:.3f}, IoU {report['iou']:.3f} on {report['count']} images")
    if report.get("ceiling"):
        line += f"; ceiling on real images Dice {report['ceiling']['dice']:.3f} (ratio {report['ratio_to_ceiling']:.2f})"
    return line
