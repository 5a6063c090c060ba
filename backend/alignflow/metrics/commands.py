"""``alignflow evaluate-images``: FID, KID, reward MMD, SSIM/PSNR, shift-tolerant LPIPS and a t-SNE map."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from alignflow.config import DictConfig


@dataclass
class EvaluateImagesConfig(DictConfig):
    """``alignflow evaluate-images``'s options (flags or a ``--config`` file)."""

    config_name = "evaluate-images config"

    generated: str = ""  # generated images (a folder, or a pairs folder with images/)
    target: str = ""  # target-domain images
    out: str = ""  # folder for report.json and embedding.png
    source: str | None = None
    paired: str | None = None
    size: int = 256  # metrics.image_quality.DEFAULT_SIZE (not imported: keeps --help light)
    limit: int | None = None
    kid_subset_size: int | None = None
    evaluator: str | None = None
    masks: str | None = None
    ceiling: str | None = None
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False  # write into an existing non-empty out (never one holding the inputs)


def register(commands: argparse._SubParsersAction, add_common_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = commands.add_parser(
        "evaluate-images", help="image-quality metrics of generated images against a target domain, and a t-SNE map",
        argument_default=argparse.SUPPRESS)
    parser.add_argument("--generated", help="generated images (a folder, or a pairs folder with images/)")
    parser.add_argument("--target", help="target-domain images")
    parser.add_argument("--source", help="source-domain images: baseline distances, the map, and partners for SSIM/PSNR/LPIPS")
    parser.add_argument("--paired", help="real images with the generated images' stems (default: --source)")
    parser.add_argument("--out", help="folder for report.json and embedding.png")
    parser.add_argument("--size", type=int, help="side every image is resized to (default 256)")
    parser.add_argument("--limit", type=int, help="at most this many evenly spaced images per set")
    parser.add_argument("--kid-subset-size", type=int, help="KID subset size (default: the smaller set, at most 1000)")
    parser.add_argument("--evaluator", help="segmenter (alignflow train-evaluator): mask fidelity of the generated images")
    parser.add_argument("--masks", help="masks the images were generated from (default: GENERATED/masks)")
    parser.add_argument("--ceiling", help="real dataset (images/ + masks/) for the evaluator's ceiling (default: --masks if it is one)")
    parser.add_argument("--overwrite", action="store_true", help="write into an existing non-empty --out")
    add_common_flags(parser)
    parser.set_defaults(handler=_run_evaluate_images)


def _run_evaluate_images(args: argparse.Namespace) -> int:
    from alignflow.cli_helpers import read_options
    from alignflow.device import resolve_device
    from alignflow.errors import InputError
    from alignflow.metrics.image_quality import REPORT_FILE, evaluate_images, format_report
    from alignflow.runs.outputs import check_output_folder

    config = EvaluateImagesConfig.from_dict(read_options(args, drop=("precision",)))  # fp32 features only
    for name in ("generated", "target", "out"):
        if not getattr(config, name):
            raise InputError(f"--{name}", "a folder", "nothing")
    inputs = {key: value for key, value in config.to_dict().items() if key != "out"}
    check_output_folder(config.out, "evaluate-images", inputs=inputs, overwrite=config.overwrite)
    report = evaluate_images(
        config.generated, config.target, config.out, source=config.source, paired=config.paired, size=config.size,
        limit=config.limit, kid_subset_size=config.kid_subset_size, seed=config.seed, device=resolve_device(config.device),
        evaluator=config.evaluator, masks=config.masks, ceiling=config.ceiling,
        on_stage=lambda stage: print(f"... {stage}", file=sys.stderr, flush=True),
    )
    print(format_report(report))
    print(f"report written to {config.out}/{REPORT_FILE}, t-SNE map to {config.out}/{report['embedding']}")
    return 0
