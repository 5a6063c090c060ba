"""``alignflow train-evaluator``: the mask-fidelity evaluator or the stage-2 reward segmenter."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from alignflow.cli_helpers import add_training_flags


def register(commands: Any, add_common_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = commands.add_parser(
        "train-evaluator", argument_default=argparse.SUPPRESS,
        help="train a segmenter for label drift: the mask-fidelity evaluator or the reward segmenter of align --w-mask")
    add_training_flags(parser)
    parser.add_argument("--target", help="labelled target pool (images/ + masks/): a 'benchmark' evaluator")
    parser.add_argument("--role", choices=["evaluator", "reward"], help="evaluator (MONAI UNet, default) or reward (MONAI BasicUNet)")
    parser.add_argument("--source-half", choices=["auto", "all", "first", "second"],
                        help="which fixed half of the source to train on (auto: reward first, evaluator second)")
    parser.add_argument("--photometric", action=argparse.BooleanOptionalAction,
                        help="strong colour/contrast/blur/noise augmentation (default: on unless --target is given)")
    parser.add_argument("--resolution", type=int, help="image side in pixels (default 128)")
    add_common_flags(parser)
    parser.set_defaults(handler=_run_train_evaluator)


def _run_train_evaluator(args: argparse.Namespace) -> int:
    from alignflow.cli_helpers import read_options, run_with_progress, with_stored_options
    from alignflow.fidelity.training import EvaluatorTrainConfig, train_evaluator

    values = read_options(args, drop=("resume",))
    if "resolution" in values:
        values.setdefault("model", {})["resolution"] = values.pop("resolution")
    resume = getattr(args, "resume", False)
    config = EvaluatorTrainConfig.from_dict(with_stored_options(values, resume))
    folder = run_with_progress(lambda listeners: train_evaluator(config, listeners, resume=resume))
    print(f"{config.kind} segmenter written to {folder}")
    return 0
