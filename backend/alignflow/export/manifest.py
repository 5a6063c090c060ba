"""The export manifest: one row per sample with what is needed to regenerate any synthetic image.

A synthetic row carries the seed, the source mask, the generator folder and the sha256 of its weights, the
reference images it was aligned to, the sampling settings, and the post-processing applied after generation.
Real and labelled target rows have the same keys (null where not applicable), so the manifest reads as one table.
A copy (``export --synthetic-share`` repeats cases so that a uniform draw gives each set its share) is a row of its
own whose ``copy_of`` names the case it repeats.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from alignflow import __version__
from alignflow.export.labels import LabelMap
from alignflow.export.samples import REAL, SYNTHETIC, TARGET, ExportSample
from alignflow.runs.checkpoint import GENERATOR_CONFIG_FILE, MODEL_FILE
from alignflow.weights import file_sha256  # cached by (path, mtime, size): one hash per generator, not per row

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 2  # 2: labelled target rows, copies (copy_of), counts.cases, sampling
_PACKAGES = ("torch", "numpy", "pillow", "diffusers", "safetensors", "zarr")
# Keys of a synthetic-pairs row that the export row lays out under its own names.
_GENERATION_KEYS = ("seed", "source_mask", "generator", "references", "guidance_scale", "sample_steps", "checkpoint_sha256")


def software_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"alignflow": __version__, "python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _generator_files(generator: str | None) -> tuple[Path | None, Path | None]:
    """(weights, config) of a generator folder or of a run folder holding ``generator/``; None where missing."""
    if not generator:
        return None, None
    folder = Path(generator)
    if (folder / "generator" / MODEL_FILE).is_file():
        folder = folder / "generator"
    weights, config = folder / MODEL_FILE, folder / GENERATOR_CONFIG_FILE
    return (weights if weights.is_file() else None), (config if config.is_file() else None)


def _generator_resolution(config: Path | None) -> int | None:
    if config is None:
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("resolution")
    except (json.JSONDecodeError, OSError):
        return None


def sample_row(sample: ExportSample, files: dict[str, str], labels: LabelMap) -> dict[str, Any]:
    """The manifest row of one exported sample (``files``: its image and mask paths inside the export)."""
    row: dict[str, Any] = {"case": sample.case, "origin": sample.origin, "copy_of": None, **files, "input_image": str(sample.image)}
    label_step = None if labels.is_identity else {"mask_ids_to_consecutive": dict(zip(labels.source_ids, range(len(labels.source_ids))))}
    if sample.origin in (REAL, TARGET):
        row.update({key: None for key in _GENERATION_KEYS})
        row.update(source_mask=str(sample.mask), references=[], post_processing={"labels": label_step})
        return row
    generation = sample.generation
    weights, config = _generator_files(generation.get("generator"))
    row.update({key: generation.get(key) for key in _GENERATION_KEYS})
    if row["checkpoint_sha256"] is None and weights is not None:
        row["checkpoint_sha256"] = file_sha256(weights)
    row["references"] = [str(r) for r in generation.get("references") or []]
    row["post_processing"] = {
        # what write_synthetic_pairs does after sampling; recorded so a regenerated image can be compared byte for byte
        "decode": "clamp to [0, 1], x255, round to uint8",
        "resize": {"from": _generator_resolution(config), "to": "the source mask's size", "method": "bicubic"},
        "labels": label_step,
    }
    extra = {k: v for k, v in generation.items() if k not in (*_GENERATION_KEYS, "stem", "synthetic")}
    if extra:
        row["generation_extra"] = extra
    return row


def copy_row(row: dict[str, Any], case: str, files: dict[str, str]) -> dict[str, Any]:
    """The row of a copy of the case ``row`` describes, exported as ``case`` with ``files``."""
    return {**row, "case": case, "copy_of": row["case"], **files}


def manifest(rows: list[dict[str, Any]], labels: LabelMap, export_format: str, name: str,
             sampling: dict[str, Any] | None = None) -> dict[str, Any]:
    """``counts``: distinct pairs per origin (copies not counted) and ``cases``, every exported case; ``sampling``: what
    ``--synthetic-share`` asked for and the copies that give it (None: every pair once)."""
    counts: dict[str, int] = {origin: sum(row["origin"] == origin and row["copy_of"] is None for row in rows)
                              for origin in (REAL, SYNTHETIC, TARGET)}
    counts["cases"] = len(rows)
    return {
        "manifest_version": MANIFEST_VERSION,
        "name": name,
        "format": export_format,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": software_versions(),
        "labels": labels.as_json(),
        "counts": counts,
        "sampling": sampling,
        "samples": rows,
    }


def copies_summary(out: Path) -> str:
    """What the export at ``out`` did beyond one case per pair, for a front end's one-line report: '' when every pair
    was exported once, else ' as N cases (share of added pairs S%)'."""
    exported = json.loads((Path(out) / MANIFEST_FILE).read_text(encoding="utf-8"))
    if exported["sampling"] is None:
        return ""
    return f" as {exported['counts']['cases']} cases (share of added pairs {round(100 * exported['sampling']['reached'], 1):g}%)"
