"""``alignflow advise-references``: which target images to use as references, how many, and whether to align."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from alignflow.config import DictConfig


@dataclass
class AdviseConfig(DictConfig):
    """``alignflow advise-references``'s options (flags or a ``--config`` file)."""

    config_name = "advise-references config"

    target: str = ""  # folder of target-domain images (or a dataset folder with images/)
    k: int = 10
    source: str | None = None
    out: str = "reference_advice"
    resolution: int = 128
    feature_encoder: str = "efficientnet-lite0"
    outliers: int = 8
    draws: int = 200
    splits: int = 100
    group_size: int = 1
    no_cache: bool = False
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    overwrite: bool = False  # write into an existing non-empty out (never one holding the images)


def register(commands: argparse._SubParsersAction, add_common_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = commands.add_parser(
        "advise-references", help="suggest k representative target images as references, flag outliers, "
        "say how many are enough and (with --source) whether alignment is needed", argument_default=argparse.SUPPRESS)
    parser.add_argument("target", help="folder of target-domain images (or a dataset folder with images/)")
    parser.add_argument("--k", type=int, help="number of references to suggest (default 10)")
    parser.add_argument("--source", help="source-domain images: adds the 'is alignment needed' verdict")
    parser.add_argument("--out", help="folder for advice.json, k_curve.png, picks_and_outliers.png, references.json "
                                      "(default: reference_advice)")
    parser.add_argument("--resolution", type=int, help="the generator's resolution: references are seen at this size (default 128)")
    parser.add_argument("--feature-encoder", help="efficientnet-lite0 (default) or dino:<folder or hub id>, as in stage 2")
    parser.add_argument("--outliers", type=int, help="how many worst-explained images to list (default 8)")
    parser.add_argument("--draws", type=int, help="random k-subsets per k for the curve's spread (default 200)")
    parser.add_argument("--splits", type=int, help="random half splits for the noise floor (default 100)")
    parser.add_argument("--group-size", type=int, help="keep runs of this many consecutive images (video frames, in "
                                                       "natural file order) on one side of the noise-floor halves (default 1)")
    parser.add_argument("--no-cache", action="store_true", help="recompute features instead of using the feature cache")
    parser.add_argument("--overwrite", action="store_true", help="write into an existing non-empty --out")
    add_common_flags(parser)
    parser.set_defaults(handler=_run_advise_references)


def _run_advise_references(args: argparse.Namespace) -> int:
    from alignflow.advisor.advise import advise_references
    from alignflow.advisor.report import REPORT_FILE, format_summary
    from alignflow.cli_helpers import TerminalProgress, read_options
    from alignflow.device import resolve_device
    from alignflow.errors import InputError
    from alignflow.runs.outputs import check_output_folder

    config = AdviseConfig.from_dict(read_options(args))
    if not config.target:
        raise InputError("target", "a folder of target-domain images", "nothing")
    if config.precision != "fp32":
        raise InputError("--precision", "fp32 (stage 2 computes reference features in fp32, and the cache holds those)",
                         config.precision)
    out = config.out
    check_output_folder(out, "advise-references", inputs=[config.target, config.source], overwrite=config.overwrite)
    bars = TerminalProgress()
    try:
        advice = advise_references(
            config.target, config.k, source=config.source, out=out, resolution=config.resolution,
            feature_encoder=config.feature_encoder, num_outliers=config.outliers, draws=config.draws, splits=config.splits,
            group_size=config.group_size, seed=config.seed, device=resolve_device(config.device),
            use_cache=not config.no_cache, on_progress=bars.progress,
        )
    finally:
        bars.close()  # before any error line, so that line is the last one on stderr
    print(format_summary(advice))
    print(f"written to {out}/: {REPORT_FILE}, " + ", ".join(advice.files[key] for key in ("plot", "thumbnails", "references")))
    return 0
