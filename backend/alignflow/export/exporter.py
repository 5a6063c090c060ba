"""``export_dataset``: real and/or generated pairs -> nnU-Net v2 raw, plain folders or OME-Zarr, all or nothing.

The export is written into a hidden temporary folder beside the destination and renamed into place only when
complete, so an interrupted or killed export leaves any previous dataset at the destination untouched.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignflow.atomic import atomic_directory, atomic_write_json, remove_stale_temporaries
from alignflow.config import DictConfig
from alignflow.data import read_image, read_mask
from alignflow.data.shares import SHARE_TOLERANCE, export_copies
from alignflow.errors import InputError
from alignflow.export.folders import FoldersWriter
from alignflow.export.labels import LabelMap
from alignflow.export.manifest import MANIFEST_FILE, copy_row, manifest, sample_row
from alignflow.export.nnunet import NnUNetWriter, check_dataset_folder_name
from alignflow.export.ome_zarr import OmeZarrWriter
from alignflow.export.samples import REAL, ExportSample, collect_samples
from alignflow.progress import ProgressCallback, report_progress
from alignflow.runs.outputs import check_output_folder

FORMATS = {"nnunet": NnUNetWriter, "folders": FoldersWriter, "ome-zarr": OmeZarrWriter}
log = logging.getLogger(__name__)


@dataclass
class ExportConfig(DictConfig):
    """``alignflow export``'s options (flags or a ``--config`` file)."""

    config_name = "export config"

    out: str = ""  # destination; for nnunet a folder named DatasetXXX_Name
    real: str | None = None  # dataset folder of real pairs (images/ + masks/)
    synthetic: list[str] | str = ()  # folder(s) of generated pairs (images/, masks/, manifest.json)
    target: str | None = None  # labelled target-domain pairs (images/ + masks/), e.g. the references labelled in napari
    synthetic_share: float | None = None  # part of the cases from --synthetic and --target (copies); None: every pair once
    format: str = "nnunet"
    overwrite: bool = False
    labels: list[str] | None = None  # class names, background first
    name: str | None = None  # dataset name in the metadata (default: the folder name)


def _check_destination(out: Path, inputs: list[Path], overwrite: bool) -> None:
    for folder in inputs:
        a, b = out.resolve(), folder.resolve()
        if a == b or a in b.parents or b in a.parents:
            raise InputError(out, "a destination outside the input folders (replacing it would delete the inputs)",
                             f"it overlaps {folder}")
    check_output_folder(out, "export", overwrite=overwrite)


def _copies(samples: list[ExportSample], share: float | None) -> tuple[dict[str, int], dict[str, Any] | None]:
    """How many times each part's cases are exported, and the manifest's ``sampling`` record (None: once each)."""
    sizes = Counter(sample.part for sample in samples)
    if share is None:
        return dict.fromkeys(sizes, 1), None
    added = {part: size for part, size in sizes.items() if part != REAL}
    real_copies, added_copies, reached = export_copies(sizes.get(REAL, 0), added, float(share))
    if abs(reached - share) > SHARE_TOLERANCE:
        log.warning("--synthetic-share %.3g: the closest share whole copies give is %.3g", share, reached)
    copies = {REAL: real_copies, **added_copies}
    record = {"synthetic_share": share, "reached": round(reached, 4), "copies": copies,
              "rule": "each added set (generated folders, labelled target pairs) an equal part of the share; "
                      "a uniform draw over the cases gives these shares"}
    return copies, record


def stale_temporary_folders(out: Path) -> list[Path]:
    """Hidden ``.<name>.*.tmp`` folders that killed exports to ``out`` left behind (safe to delete when none runs)."""
    out = Path(out)
    return sorted(out.parent.glob(f".{out.name}.*.tmp")) if out.parent.is_dir() else []


def export_dataset(
    out: Path | str,
    *,
    real: Path | str | None = None,
    synthetic: Sequence[Path | str] = (),
    target: Path | str | None = None,
    synthetic_share: float | None = None,
    export_format: str = "nnunet",
    overwrite: bool = False,
    label_names: Sequence[str] | None = None,
    name: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Export real pairs (a dataset folder), generated pairs (folders written by ``write_synthetic_pairs``) and/or
    labelled target pairs (``target``, a dataset folder).

    ``synthetic_share`` s: the cases are repeated (``<case>_copy<k>``, hard links where the file system has them) so
    that a uniform draw over the export, as nnU-Net's and most training loops make, takes s of its pairs from the
    generated and target sets, each set an equal part of s (the rule of ``evaluate-segmentation --synthetic-share``;
    ``alignflow.data.shares.export_copies``). None exports every pair once.
    ``export_format``: ``nnunet`` (``out`` must be named ``DatasetXXX_Name``; adds a MONAI ``datalist.json``),
    ``folders`` (``images/`` + ``masks/``) or ``ome-zarr``. Every format gets ``manifest.json``: one row per sample.
    Class ids become consecutive 0..K; ``label_names`` names them (background first). ``on_progress("export", done, total)``
    is called after each sample. Returns ``out``.
    """
    out = Path(out)
    if export_format not in FORMATS:
        raise InputError("format", f"one of {', '.join(FORMATS)}", repr(export_format))
    if export_format == "nnunet":
        check_dataset_folder_name(out)
    synthetic = [Path(s) for s in ([synthetic] if isinstance(synthetic, (str, Path)) else synthetic)]
    inputs = [Path(folder) for folder in (real, target) if folder is not None] + synthetic
    _check_destination(out, inputs, overwrite)
    for leftover in remove_stale_temporaries(out.parent):  # what killed exports (and other killed writers) left here
        log.warning("removed %s, left over from an interrupted write", leftover)
    sources = collect_samples(Path(real) if real is not None else None, synthetic, Path(target) if target is not None else None)
    copies, sampling = _copies(sources.samples, synthetic_share)
    labels = LabelMap.from_class_values(sources.class_values, label_names)
    name = name or out.name.removesuffix(".zarr").removesuffix(".ome")
    total, names = len(sources.samples), {sample.case for sample in sources.samples}
    with atomic_directory(out) as tmp:
        writer = FORMATS[export_format](tmp, labels, name)
        rows = []
        for done, sample in enumerate(sources.samples, start=1):
            image, mask = read_image(sample.image), labels.apply(read_mask(sample.mask))
            files = writer.write_case(sample.case, image, mask)
            rows.append(original := sample_row(sample, files, labels))
            for copy in range(2, copies[sample.part] + 1):
                case = f"{sample.case}_copy{copy}"
                if case in names:
                    raise InputError(sample.image, f"no input pair whose case name is {case!r} (the name of a copy)", "one is")
                rows.append(copy_row(original, case, writer.copy_case(case, files, image, mask)))
            report_progress(on_progress, "export", done, total)
        writer.finish(rows)
        atomic_write_json(tmp / MANIFEST_FILE, manifest(rows, labels, export_format, name, sampling))
    return out
