"""``alignflow augment``: stage 1 + stage 2 + generation + KID report + export, the main job (``--demo``: on the
bundled two-scanner phantom)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignflow.cli_helpers import read_options, run_with_progress
from alignflow.errors import InputError

# The bundled demo: small enough for a 2-core CPU in a few minutes (see docs/benchmarks.md for what it measures).
DEMO_DEFAULTS: dict[str, Any] = {
    "resolution": 128, "stage1_steps": 600, "stage2_steps": 150, "num_references": 8, "batch_size": 8,
    "sample_steps": 20, "num_generated": 32,
}


def register(commands: argparse._SubParsersAction, add_common_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    augment = commands.add_parser("augment", help="stage 1 + stage 2 + generation + KID report (the main job)", argument_default=argparse.SUPPRESS)
    augment.add_argument("--demo", action="store_true", help="run on the bundled two-scanner phantom (no data needed)")
    augment.add_argument("--source")
    augment.add_argument("--references")
    augment.add_argument("--target", help="target-domain images for KID (default: the references)")
    augment.add_argument("--masks", help="dataset folder whose masks become images (default: the source)")
    augment.add_argument("--num-generated", type=int)
    augment.add_argument("--out")
    augment.add_argument("--num-references", type=int)
    augment.add_argument("--resolution", type=int)
    augment.add_argument("--stage1-steps", type=int)
    augment.add_argument("--stage2-steps", type=int)
    augment.add_argument("--batch-size", type=int)
    augment.add_argument("--guidance-scale", type=float)
    augment.add_argument("--sample-steps", type=int)
    augment.add_argument("--max-pairs", type=int)
    augment.add_argument("--synthetic-masks", type=int, help="also generate images for N new masks from the mask generator (best of K each)")
    augment.add_argument("--mask-steps", type=int, help="mask generator training steps")
    augment.add_argument("--mask-candidates", type=int, help="K candidates per synthetic mask")
    augment.add_argument("--export-format", choices=["nnunet", "folders", "ome-zarr"], help="format of the augmented training set in OUT/export (default nnunet)")
    augment.add_argument("--export-share", type=float, help="repeat cases so that the generated sets make this share of the "
                         "export, each an equal part (default: every pair once)")
    augment.add_argument("--evaluator", help="segmenter (alignflow train-evaluator) for the mask fidelity of every model in the report")
    augment.add_argument("--method", nargs="+", metavar="METHOD",
                         help="how the new pairs are made, several to compare them: generate (default), translate, fda, "
                         "histogram, photometric (these three train no generator)")
    augment.add_argument("--strength", type=float, help="translate: strength s in [0, 1] (default 0.5; 0 keeps the source image)")
    augment.add_argument("--fda-beta", type=float, help="fda: low-frequency window, a fraction of the image side (default 0.05)")
    augment.add_argument("--overwrite", action="store_true", help="write into an existing non-empty --out that augment did not write "
                         "(never one holding the inputs or another command's run)")
    add_common_flags(augment)
    augment.set_defaults(handler=_run_augment)


def _run_augment(args: argparse.Namespace) -> int:
    from alignflow.augment.pipeline import AugmentConfig, augment, format_report

    values = read_options(args, drop=("demo",))
    if getattr(args, "demo", False):
        from alignflow.data.phantom import phantom_dir

        root = phantom_dir()
        values = {**DEMO_DEFAULTS, "source": str(root / "source"), "references": str(root / "target" / "images"),
                  "target": str(root / "target" / "images"), **values}
        values.setdefault("out", "runs/demo")
    config = AugmentConfig.from_dict(values)
    for flag, value in (("--source", config.source), ("--references", config.references), ("--out", config.out)):
        if not value:
            raise InputError(flag, "--source, --references and --out (or --demo)", "nothing")
    # finished stages in --out are reused, killed ones resumed
    report = run_with_progress(lambda listeners: augment(config, listeners))
    print(format_report(report))
    print(f"report written to {Path(config.out) / 'report.json'}")
    return 0
