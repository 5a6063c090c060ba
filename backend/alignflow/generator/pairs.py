"""Synthetic image-mask pairs: images for mask files (optionally best of K by an evaluator), written with provenance.

The one generation API: ``alignflow generate``, ``alignflow augment`` and the plugin's Generate panel all call
``generate_pairs``, so a folder of pairs means the same thing whoever wrote it: ``images/`` and ``masks/`` at each
mask's original size, and ``manifest.json`` with one row per pair (method, seed, source mask, generator and the hash
of its weights, references, sampling settings, and fidelity scores when an evaluator scored them). With
``source_images`` and a strength below 1 the same call translates real images (method "translate"); the cheap
alternatives of ``augment.methods`` write their pairs through ``write_synthetic_pairs`` too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignflow.atomic import atomic_directory, atomic_write_json
from alignflow.data import load_masks, load_reference_images, read_mask, read_size, resize_to, to_uint8, write_image, write_mask
from alignflow.errors import InputError
from alignflow.generator.filtering import check_candidates, generate_with_fidelity
from alignflow.generator.sampling import LoadedGenerator, check_strength, translation_start_step
from alignflow.progress import ProgressCallback
from alignflow.runs.checkpoint import MODEL_FILE
from alignflow.runs.outputs import check_output_folder

MANIFEST_FILE = "manifest.json"


@dataclass
class GeneratedPairs:
    """What ``generate_pairs`` wrote to ``folder``, and the images at the generator's resolution."""

    folder: Path
    stems: list[str]
    images: torch.Tensor  # [N, 3, R, R] in [0, 1] (R: the generator's resolution, or the resolution a method was given)
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
    source_images: Sequence[Path] | None = None,
    strength: float = 1.0,
    overwrite: bool = False,
) -> GeneratedPairs:
    """Generate one image per mask file (the best of ``candidates`` by ``evaluator`` when K > 1) and write the pairs.

    Image i is seeded with ``seed + i`` (candidate j with ``seed + i + j * N``), so any pair can be regenerated
    alone from its manifest row. ``out`` is written all or nothing; an existing non-empty ``out`` is replaced only
    with ``overwrite``, and never when it holds the masks, the images or the generator read (``runs.outputs``).

    Translation: with ``source_images`` (image file i belongs to mask file i, same size) image i starts from the real
    source image noised to t0 = 1 - ``strength`` (``sampling.generate_images``); s = 1 is generation from noise.
    """
    check_candidates(candidates)  # before loading anything
    check_strength(strength)
    mask_files = [Path(path) for path in mask_files]
    check_output_folder(out, "generate", inputs=[mask_files, source_images or [], generator.folder], overwrite=overwrite)
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
    translation: dict[str, Any] = {}
    if source_images is not None:
        source_files = _source_images_for(source_images, mask_files)
        translation = {"source_images": load_reference_images(source_files, generator.config.resolution),
                       "strength": strength}
    generated = generate_with_fidelity(
        generator, masks, evaluator=evaluator, candidates=candidates, seed=seed, num_steps=num_steps,
        guidance_scale=guidance_scale, batch_size=batch_size, precision=precision, on_progress=on_progress,
        **translation,
    )
    provenance = {"method": "generate", **generation_provenance(generator, guidance_scale, num_steps)}
    per_image = generated.rows
    if source_images is not None:
        provenance.update(method="translate", strength=float(strength),
                          start_step=translation_start_step(strength, num_steps))
        per_image = [{"source_image": str(path), **row} for path, row in zip(source_files, generated.rows)]
    rows = write_synthetic_pairs(Path(out), stems, generated.images, mask_files, generated.seeds, provenance, per_image,
                                 overwrite=overwrite)
    return GeneratedPairs(Path(out), stems, generated.images, generated.seeds, rows, generated.scores)


def _source_images_for(source_images: Sequence[Path], mask_files: Sequence[Path]) -> list[Path]:
    """The real image of each mask, checked: one per mask, each of its mask's size (the pair must line up)."""
    files = [Path(path) for path in source_images]
    if len(files) != len(mask_files):
        raise InputError("--from-images", f"one source image per mask file ({len(mask_files)})", str(len(files)))
    for image, mask in zip(files, mask_files):
        if read_size(image) != read_size(mask):
            raise InputError(image, f"an image of its mask's size {read_size(mask)} ({mask})", str(read_size(image)))
    return files


def write_synthetic_pairs(
    out: Path, stems: Sequence[str], images: torch.Tensor | Iterable[torch.Tensor], mask_paths: Sequence[Path],
    seeds: Sequence[int], provenance: dict[str, Any], per_image: Sequence[dict[str, Any]] | None = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """``out/images`` + ``out/masks`` at each mask's original size, plus ``manifest.json``; all or nothing.

    ``images`` is a batch [N, 3, R, R] or any iterable of [3, H, W] images in [0, 1] (a generator streams them: one
    image in memory at a time); each is resized to its mask's size (a no-op where it has it). ``per_image`` adds
    fields to each image's manifest row (e.g. its mask-fidelity scores). Returns the rows. An existing non-empty
    ``out`` is replaced only with ``overwrite``, and never when it holds the masks read (``runs.outputs``).
    """
    check_output_folder(out, "generate", inputs=mask_paths, overwrite=overwrite)
    rows = []
    extras = per_image if per_image is not None else [{} for _ in stems]
    # Binary sets keep 0/255 masks only when every mask is binary: a 3-class mask that shows two classes stays ids.
    binary = all(int(read_mask(path).max()) <= 1 for path in mask_paths)
    with atomic_directory(out) as tmp:
        for stem, image, mask_path, seed, extra in zip(stems, images, mask_paths, seeds, extras):
            mask = read_mask(mask_path)
            write_image(tmp / "images" / f"{stem}.png", resize_to(to_uint8(image), mask.shape))
            write_mask(tmp / "masks" / f"{stem}.png", mask, binary_as_255=binary)
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
