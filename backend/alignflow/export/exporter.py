"""``export_dataset``: real and/or generated pairs -> nnU-Net v2 raw, plain folders or OME-Zarr, all or nothing.

The export is written into a hidden temporary folder beside the destination and renamed into place only when
complete, so an interrupted or killed export leaves any previous dataset at the destination untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alignflow.atomic import atomic_directory, atomic_write_json, remove_stale_temporaries
from alignflow.config import DictConfig
from alignflow.data import read_image, read_mask
from alignflow.errors import InputError
from alignflow.export.folders import FoldersWriter
from alignflow.export.labels import LabelMap
from alignflow.export.manifest import MANIFEST_FILE, manifest, sample_row
from alignflow.export.nnunet import NnUNetWriter, check_dataset_folder_name
from alignflow.export.ome_zarr import OmeZarrWriter
from alignflow.export.samples import collect_samples
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


def stale_temporary_folders(out: Path) -> list[Path]:
    """Hidden ``.<name>.*.tmp`` folders that killed exports to ``out`` left behind (safe to delete when none runs)."""
    out = Path(out)
    return sorted(out.parent.glob(f".{out.name}.*.tmp")) if out.parent.is_dir() else []


def export_dataset(
    out: Path | str,
    *,
    real: Path | str | None = None,
    synthetic: Sequence[Path | str] = (),
    export_format: str = "nnunet",
    overwrite: bool = False,
    label_names: Sequence[str] | None = None,
    name: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Export real pairs (a dataset folder) and/or generated pairs (folders written by ``write_synthetic_pairs``).

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
    inputs = ([Path(real)] if real is not None else []) + synthetic
    _check_destination(out, inputs, overwrite)
    for leftover in remove_stale_temporaries(out.parent):  # what killed exports (and other killed writers) left here
        log.warning("removed %s, left over from an interrupted write", leftover)
    sources = collect_samples(Path(real) if real is not None else None, synthetic)
    labels = LabelMap.from_class_values(sources.class_values, label_names)
    name = name or out.name.removesuffix(".zarr").removesuffix(".ome")
    total = len(sources.samples)
    with atomic_directory(out) as tmp:
        writer = FORMATS[export_format](tmp, labels, name)
        rows = []
        for done, sample in enumerate(sources.samples, start=1):
            image, mask = read_image(sample.image), read_mask(sample.mask)
            files = writer.write_case(sample.case, image, labels.apply(mask))
            rows.append(sample_row(sample, files, labels))
            report_progress(on_progress, "export", done, total)
        writer.finish([sample.case for sample in sources.samples])
        atomic_write_json(tmp / MANIFEST_FILE, manifest(rows, labels, export_format, name))
    return out
