"""What goes into an export: real pairs, generated pairs and labelled target pairs, each with a unique case name and
its provenance.

Real (source) pairs come from a dataset folder (``images/`` + ``masks/``); generated pairs from a folder written by
:func:`alignflow.generator.pairs.write_synthetic_pairs` (the same layout plus ``manifest.json``, one row per pair), whose rows
say how each image was made; labelled target pairs (say, the references a user labelled in napari) from a dataset folder
too. Every input is checked before anything is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignflow.data import scan_dataset
from alignflow.errors import InputError

SYNTHETIC_MANIFEST = "manifest.json"
REAL, SYNTHETIC, TARGET = "real", "synthetic", "target"
# Letters, digits, '-', '.' and '_' only: nnU-Net splits the channel suffix off at the last '_', zarr group names
# and every file system accept these.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ExportSample:
    """One image-mask pair to export: ``case`` is its name in the export, ``part`` the input set it comes from (its case
    prefix: real, synthetic<i>, target), ``generation`` its synthetic manifest row."""

    case: str
    origin: str
    image: Path
    mask: Path
    generation: dict[str, Any] = field(default_factory=dict)
    part: str = ""


@dataclass
class ExportSources:
    samples: list[ExportSample]
    class_values: tuple[int, ...]  # class ids seen in any mask, sorted


def _synthetic_rows(folder: Path) -> dict[str, dict[str, Any]]:
    """The manifest rows of a generated-pairs folder, by stem; a pair without a row cannot be regenerated."""
    path = folder / SYNTHETIC_MANIFEST
    if not path.is_file():
        raise InputError(path, "the manifest.json that `alignflow generate` / `augment` writes beside images/ and masks/",
                         "no such file")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, "valid JSON", str(error)) from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) and isinstance(row.get("stem"), str) for row in rows):
        raise InputError(path, "a JSON list of rows, each with a 'stem'", type(rows).__name__)
    return {row["stem"]: row for row in rows}


def _case_name(prefix: str, stem: str) -> str:
    return f"{prefix}_{_UNSAFE.sub('_', stem)}"


def collect_samples(real: Path | None = None, synthetic: Sequence[Path] = (), target: Path | None = None) -> ExportSources:
    """Scan the real folder, every generated folder and the target folder; raise on the first folder with problems
    (all listed).

    Case names are ``real_<stem>``, ``synthetic_<stem>`` (``synthetic<i>_<stem>`` for the i-th of several generated
    folders, because generated pairs reuse the stems of the masks they were made from) and ``target_<stem>``.
    """
    if real is None and not synthetic and target is None:
        raise InputError("export", "real pairs (--real), generated pairs (--synthetic) and/or labelled target pairs (--target)", "none")
    samples: list[ExportSample] = []
    seen: set[int] = set()
    real_classes = None
    if real is not None:
        folder = scan_dataset(Path(real))
        seen.update(folder.class_values)
        real_classes = folder.num_classes
        samples += [ExportSample(_case_name(REAL, p.stem), REAL, p.image, p.mask, part=REAL) for p in folder.pairs]
    for index, generated in enumerate(synthetic):
        generated = Path(generated)
        folder = scan_dataset(generated)
        rows = _synthetic_rows(generated)
        missing = [p.stem for p in folder.pairs if p.stem not in rows]
        if missing:
            raise InputError(generated / SYNTHETIC_MANIFEST, "a row for every pair in images/",
                             f"no row for {len(missing)} pair(s), e.g. {missing[0]!r}")
        _check_classes(generated / "masks", folder.class_values, real_classes, real)
        seen.update(folder.class_values)
        prefix = SYNTHETIC if len(synthetic) == 1 else f"{SYNTHETIC}{index + 1}"
        samples += [ExportSample(_case_name(prefix, p.stem), SYNTHETIC, p.image, p.mask, rows[p.stem], part=prefix) for p in folder.pairs]
    if target is not None:
        folder = scan_dataset(Path(target))
        _check_classes(Path(target) / "masks", folder.class_values, real_classes, real)
        seen.update(folder.class_values)
        samples += [ExportSample(_case_name(TARGET, p.stem), TARGET, p.image, p.mask, part=TARGET) for p in folder.pairs]
    _check_unique(samples)
    return ExportSources(samples, tuple(sorted(seen | {0})))


def _check_classes(masks: Path, class_values: Sequence[int], real_classes: int | None, real: Path | None) -> None:
    """Added pairs of other classes than the real set's would silently change the exported label map."""
    if real_classes is not None and max(class_values, default=0) >= real_classes:
        raise InputError(masks, f"class ids below {real_classes} (the classes of the real pairs in {real})",
                         f"class ids {list(class_values)}")


def _check_unique(samples: list[ExportSample]) -> None:
    """Stems that differ only in replaced characters ('a b' and 'a_b') would overwrite each other."""
    first: dict[str, ExportSample] = {}
    for sample in samples:
        if sample.case in first:
            raise InputError(sample.image, "file names that stay distinct as case names (letters, digits, '.', '-', '_')",
                             f"{sample.image.name} and {first[sample.case].image.name} both become {sample.case!r}")
        first[sample.case] = sample
