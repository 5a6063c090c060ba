"""``alignflow train-masks`` and ``alignflow masks``: thin CLI clients of the mask-synthesis engine API."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from alignflow.cli_helpers import add_training_flags, read_options, with_stored_options

# CLI flag (dest) -> PostprocessConfig field
POSTPROCESS_FLAGS = {"threshold": "threshold", "blur_sigma": "sigma", "opening_radius": "opening_radius",
                     "closing_radius": "closing_radius", "min_area": "min_area", "fill_holes": "fill_holes"}


def register(commands: Any, add_common_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    train = commands.add_parser("train-masks", help="train the flow-matching mask generator on a dataset's masks", argument_default=argparse.SUPPRESS)
    add_training_flags(train)
    train.add_argument("--space", choices=["latent", "pixel"], help="model masks as TAEF2 latents (default) or pixels")
    train.add_argument("--resolution", type=int, help="side of the generated masks in pixels (default 128)")
    add_common_flags(train)
    train.set_defaults(handler=_run_train_masks)

    masks = commands.add_parser("masks", help="generate synthetic masks: sample K candidates per real mask, post-process, keep the best", argument_default=argparse.SUPPRESS)
    masks.add_argument("--generator", help="a trained mask generator (run folder or generator folder)")
    masks.add_argument("--masks", help="real masks to match: a dataset folder or a folder of mask files")
    masks.add_argument("--out", help="output folder (masks/, manifest.json, report.json)")
    masks.add_argument("--num-masks", type=int, help="one synthetic mask for each of the first N real masks (default all)")
    masks.add_argument("--candidates", "-k", type=int, help="K candidates per real mask; the most similar is kept (default 8)")
    masks.add_argument("--sample-steps", type=int, help="Euler steps (default 28)")
    masks.add_argument("--strength", type=float, help="1 = fresh masks (default); below 1 = variations of each real mask")
    masks.add_argument("--output-size", type=int, help="side of the written masks (default: the generator's resolution)")
    masks.add_argument("--feature-encoder", help="efficientnet-lite0 (default) or dino:<folder or hub id>")
    masks.add_argument("--threshold", type=float, help="binary threshold on the raw mask (default 0.5)")
    masks.add_argument("--blur-sigma", type=float, help="Gaussian blur before re-thresholding; 0 = off")
    masks.add_argument("--opening-radius", type=int, help="removes bright specks; 0 = off")
    masks.add_argument("--closing-radius", type=int, help="removes dark specks; 0 = off")
    masks.add_argument("--min-area", type=int, help="remove components below this many pixels; 0 = off")
    masks.add_argument("--fill-holes", action=argparse.BooleanOptionalAction, help="fill holes inside objects")
    masks.add_argument("--batch-size", type=int)
    masks.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out (never one holding the real masks or a run)")
    add_common_flags(masks)
    masks.set_defaults(handler=_run_masks)


def _run_train_masks(args: argparse.Namespace) -> int:
    from alignflow.cli_helpers import run_with_progress
    from alignflow.masks.training import MaskTrainConfig, train_mask_generator

    values = read_options(args, drop=("resume",))
    generator = values.setdefault("generator", {})
    for name in ("space", "resolution"):
        if name in values:
            generator[name] = values.pop(name)
    resume = getattr(args, "resume", False)
    config = MaskTrainConfig.from_dict(with_stored_options(values, resume))
    folder = run_with_progress(lambda listeners: train_mask_generator(config, listeners, resume=resume))
    print(f"mask generator written to {folder}")
    return 0


def _run_masks(args: argparse.Namespace) -> int:
    from alignflow.cli_helpers import run_with_progress
    from alignflow.masks.synthesis import MaskSynthesisConfig, synthesize_masks

    values = read_options(args)
    postprocess = values.setdefault("postprocess", {})
    for flag, name in POSTPROCESS_FLAGS.items():
        if flag in values:
            postprocess[name] = values.pop(flag)
    report = run_with_progress(lambda listeners: synthesize_masks(MaskSynthesisConfig.from_dict(values), listeners))
    print(f"{report['kept']} synthetic masks (best of {report['candidates']}) written to {report['masks']}; "
          f"{report['rejected_candidates']} degenerate candidates rejected, {report['without_valid_candidate']} real masks without a valid candidate")
    return 0
