"""Synthetic image-mask pairs: images for mask files (optionally best of K by an evaluator), written with provenance.

The one generation API: ``alignflow generate``, ``alignflow augment`` and the plugin's Generate panel all call
``generate_pairs``, so a folder of pairs means the same thing whoever wrote it: ``images/`` and ``masks/`` at each
mask's original size, and ``manifest.json`` with one row per pair (seed, source mask, generator and the hash of its
weights, references, sampling settings, and fidelity scores when an evaluator scored them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignflow.atomic import atomic_directory, atomic_write_json
from alignflow.data import load_masks, read_mask, resize_to, to_uint8, write_image, write_mask
from alignflow.errors import InputError
from alignflow.generator.filtering import check_candidates, generate_with_fidelity
from alignflow.generator.sampling import LoadedGenerator
from alignflow.progress import ProgressCallback
from alignflow.runs.checkpoint import MODEL_FILE

MANIFEST_FILE = "manifest.json"


@dataclass
class GeneratedPairs:
    """What ``generate_pairs`` wrote to ``folder``, and the images at the generator's resolution."""

    folder: Path
    stems: list[str]
    images: torch.Tensor  # [N, 3, R, R] in [0, 1]
    seeds: list[int]
    rows: list[dict[str, Any]]  # the manifest rows
    scores: Any = None  # fidelity.metric.FidelityScores of the kept images, when an evaluator scored them


def generate_pairs(
    generator: LoadedGenerator,
    mask_files: Sequence[Path],
    out: Path,
    *,
    stems: Sequence[str] | None = None,
    evaluator: Any = None,
    candidates: int = 1,
    seed: int = 0,
    num_steps: int = 28,
    guidance_scale: float = 2.0,
    batch_size: int = 16,
    precision: str = "fp32",
    on_progress: ProgressCallback | None = None,
) -> GeneratedPairs:
    """Generate one image per mask file (the best of ``candidates`` by ``evaluator`` when K > 1) and write the pairs.

    Image i is seeded with ``seed + i`` (candidate j with ``seed + i + j * N``), so any pair can be regenerated
    alone from its manifest row. ``out`` is written all or nothing.
    """
    check_candidates(candidates)  # before loading anything
    mask_files = [Path(path) for path in mask_files]
    stems = list(stems) if stems is not None else [path.stem for path in mask_files]
    if len(stems) != len(mask_files):
        raise InputError("stems", f"one stem per mask file ({len(mask_files)})", str(len(stems)))
    if not mask_files:
        raise InputError("masks", "at least one mask file", "none")
    masks = load_masks(mask_files, generator.config.resolution)
    if int(masks.max()) >= generator.config.num_classes:
        worst = mask_files[int(masks.flatten(1).max(dim=1).values.argmax())]
        raise InputError(worst, f"class ids below {generator.config.num_classes} (the generator's classes)",
                         f"id {int(masks.max())}")
    generated = generate_with_fidelity(
        generator, masks, evaluator=evaluator, candidates=candidates, seed=seed, num_steps=num_steps,
        guidance_scale=guidance_scale, batch_size=batch_size, precision=precision, on_progress=on_progress,
    )
    provenance = generation_provenance(generator, guidance_scale, num_steps)
    rows = write_synthetic_pairs(Path(out), stems, generated.images, mask_files, generated.seeds, provenance,
                                 generated.rows)
    return GeneratedPairs(Path(out), stems, generated.images, generated.seeds, rows, generated.scores)


def write_synthetic_pairs(
    out: Path, stems: Sequence[str], images: torch.Tensor, mask_paths: Sequence[Path], seeds: Sequence[int],
    provenance: dict[str, Any], per_image: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """``out/images`` + ``out/masks`` at each mask's original size, plus ``manifest.json``; all or nothing.

    ``per_image`` adds fields to each image's manifest row (e.g. its mask-fidelity scores). Returns the rows.
    """
    rows = []
    extras = per_image if per_image is not None else [{} for _ in stems]
    with atomic_directory(out) as tmp:
        for stem, image, mask_path, seed, extra in zip(stems, images, mask_paths, seeds, extras):
            mask = read_mask(mask_path)
            write_image(tmp / "images" / f"{stem}.png", resize_to(to_uint8(image), mask.shape))
            write_mask(tmp / "masks" / f"{stem}.png", mask, binary_as_255=int(mask.max()) <= 1)
            rows.append({"stem": stem, "synthetic": True, "seed": seed, "source_mask": str(mask_path), **provenance, **extra})
        atomic_write_json(tmp / MANIFEST_FILE, rows)
    return rows


def generation_provenance(generator: LoadedGenerator, guidance_scale: float, sample_steps: int) -> dict[str, Any]:
    """What a manifest row needs to regenerate an image: generator (and the hash of its weights), references, sampling."""
    from alignflow.export.manifest import software_versions
    from alignflow.weights import file_sha256

    return {"generator": str(generator.folder), "checkpoint_sha256": file_sha256(_weights_file(generator.folder, MODEL_FILE)),
            "references": generator.info.get("references", []), "guidance_scale": guidance_scale,
            "sample_steps": sample_steps, "software": software_versions()}


def _weights_file(folder: Path, name: str) -> Path:
    return folder / "generator" / name if (folder / "generator" / name).exists() else folder / name
