"""``alignflow export``: real and/or generated pairs -> nnU-Net v2 raw, plain folders or OME-Zarr."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def register(commands: argparse._SubParsersAction, add_common_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = commands.add_parser(
        "export", help="export real and/or generated pairs as nnU-Net v2 raw, plain folders or OME-Zarr",
        argument_default=argparse.SUPPRESS)
    parser.add_argument("--real", help="dataset folder of real pairs (images/ + masks/)")
    parser.add_argument("--synthetic", nargs="+", help="folder(s) of generated pairs (images/, masks/, manifest.json)")
    parser.add_argument("--target", help="labelled target-domain pairs (images/ + masks/), e.g. the references you labelled")
    parser.add_argument("--synthetic-share", type=float,
                        help="fraction of the cases from --synthetic and --target, each folder an equal part of it, by "
                             "repeating cases (hard links); default: every pair once")
    parser.add_argument("--format", choices=["nnunet", "folders", "ome-zarr"], help="default: nnunet")
    parser.add_argument("--out", help="destination; for nnunet a folder named DatasetXXX_Name")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing destination (only once complete)")
    parser.add_argument("--labels", nargs="+", help="class names, background first (default: background, class_1, ...)")
    parser.add_argument("--name", help="dataset name written into the metadata (default: the folder name)")
    add_common_flags(parser)
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from alignflow.cli_helpers import TerminalProgress, read_options
    from alignflow.errors import InputError
    from alignflow.export.exporter import ExportConfig, export_dataset
    from alignflow.export.manifest import copies_summary

    # --device/--precision/--seed (every command's flags) mean nothing to an export.
    config = ExportConfig.from_dict(read_options(args, drop=("device", "precision", "seed")))
    if not config.out:
        raise InputError("alignflow export", "--out (the destination)", "missing")
    bars = TerminalProgress()  # a bar opens at the first sample, so input errors are not preceded by an empty bar
    try:
        out = export_dataset(
            config.out, real=config.real, synthetic=config.synthetic or (), target=config.target,
            synthetic_share=config.synthetic_share, export_format=config.format,
            overwrite=config.overwrite, label_names=config.labels, name=config.name, on_progress=bars.progress,
        )
    finally:
        bars.close()
    print(f"{bars.done.get('export', 0)} pairs exported to {out}{copies_summary(out)} (provenance in {out / 'manifest.json'})")
    return 0
