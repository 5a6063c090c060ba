"""``alignflow evaluate-images``: FID, KID, reward MMD, SSIM/PSNR, shift-tolerant LPIPS and a t-SNE map."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def register(commands: argparse._SubParsersAction, add_common_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = commands.add_parser(
        "evaluate-images", help="image-quality metrics of generated images against a target domain, and a t-SNE map",
        argument_default=argparse.SUPPRESS)
    parser.add_argument("--generated", required=True, help="generated images (a folder, or a pairs folder with images/)")
    parser.add_argument("--target", required=True, help="target-domain images")
    parser.add_argument("--source", help="source-domain images: baseline distances, the map, and partners for SSIM/PSNR/LPIPS")
    parser.add_argument("--paired", help="real images with the generated images' stems (default: --source)")
    parser.add_argument("--out", required=True, help="folder for report.json and embedding.png")
    parser.add_argument("--size", type=int, help="side every image is resized to (default 256)")
    parser.add_argument("--limit", type=int, help="at most this many evenly spaced images per set")
    parser.add_argument("--kid-subset-size", type=int, help="KID subset size (default: the smaller set, at most 1000)")
    parser.add_argument("--evaluator", help="segmenter (alignflow train-evaluator): mask fidelity of the generated images")
    parser.add_argument("--masks", help="masks the images were generated from (default: GENERATED/masks)")
    parser.add_argument("--ceiling", help="real dataset (images/ + masks/) for the evaluator's ceiling (default: --masks if it is one)")
    add_common_flags(parser)
    parser.set_defaults(handler=_run_evaluate_images)


def _run_evaluate_images(args: argparse.Namespace) -> int:
    from alignflow.cli_helpers import read_options
    from alignflow.device import resolve_device
    from alignflow.metrics.image_quality import DEFAULT_SIZE, REPORT_FILE, evaluate_images, format_report

    values = read_options(args)
    report = evaluate_images(
        values["generated"], values["target"], values["out"], source=values.get("source"), paired=values.get("paired"),
        size=values.get("size", DEFAULT_SIZE), limit=values.get("limit"), kid_subset_size=values.get("kid_subset_size"),
        seed=values.get("seed", 0), device=resolve_device(values.get("device", "auto")),
        evaluator=values.get("evaluator"), masks=values.get("masks"), ceiling=values.get("ceiling"),
        on_stage=lambda stage: print(f"... {stage}", file=sys.stderr, flush=True),
    )
    print(format_report(report))
    print(f"report written to {values['out']}/{REPORT_FILE}, t-SNE map to {values['out']}/{report['embedding']}")
    return 0
