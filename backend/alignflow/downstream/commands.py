"""``alignflow evaluate-segmentation``: train a segmenter on real (+ synthetic) pairs and score it on test sets."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from alignflow.errors import InputError


def register(commands: Any, add_common_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = commands.add_parser(
        "evaluate-segmentation", argument_default=argparse.SUPPRESS,
        help="train UNet / SegFormer / MedFlowSeg on real (+ synthetic) pairs; Dice, IoU and HD95 on test sets")
    parser.add_argument("--train", help="labelled real pairs: a folder with images/ and masks/")
    parser.add_argument("--synthetic", nargs="+",
                        help="synthetic pairs in the same layout (alignflow generate, export --format folders); several folders "
                             "(e.g. two methods' sets, or labelled target images) each get an equal share of the synthetic draws")
    parser.add_argument("--synthetic-share", type=float,
                        help="fraction of every batch drawn from --synthetic (all its folders), in [0, 1) (default: uniform over real + synthetic)")
    parser.add_argument("--pretrain-synthetic-steps", type=int, help="first train this many steps on synthetic pairs only")
    parser.add_argument("--feedback-generator", help="a trained generator for Generative Feedback (with --w-feedback)")
    parser.add_argument("--w-feedback", type=float, help="weight of the Generative Feedback loss (default 0 = off; the paper uses 1)")
    parser.add_argument("--feedback-temperature", type=float, help="softmax temperature lambda in (0, 1] of the fed-back mask (default 1)")
    parser.add_argument("--feedback-batch-size", type=int, help="Generative Feedback on the first N pairs of each batch only (default: all)")
    parser.add_argument("--test", action="append", metavar="NAME=DIR", help="a labelled test set (repeat for several)")
    parser.add_argument("--model", choices=["unet", "segformer", "medflowseg"], help="the segmenter (default unet)")
    parser.add_argument("--out", help="output folder (results.json, splits.json, the run and the model)")
    parser.add_argument("--steps", type=int, help="training steps on the real (+ synthetic) mix (default 1500)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="learning rate (default: 1e-3 unet, 3e-4 segformer, 1e-4 medflowseg)")
    parser.add_argument("--lr-schedule", choices=["constant", "cosine"], help="after the warm-up: constant (default) or cosine decay to 0")
    parser.add_argument("--warmup-steps", type=int, help="linear learning-rate warm-up over the first N steps (default 0)")
    parser.add_argument("--ema-decay", type=float, help="score an exponential moving average of the weights, e.g. 0.99 (default: off)")
    parser.add_argument("--paired-batches", action="store_true",
                        help="batches and flips depend only on seed and step: arms with one seed differ only in their synthetic share")
    parser.add_argument("--validation", action="append", metavar="NAME=DIR", help="a labelled set for the learning curve (repeatable)")
    parser.add_argument("--validate-every", type=int, help="score the model on --validation every N steps (results.json curve)")
    parser.add_argument("--test-time-flips", action="store_true",
                        help="predict with the probabilities averaged over 4 flips (a finished evaluation is scored again)")
    parser.add_argument("--resolution", type=int, help="side of the square that training and scoring happen at (default 128)")
    parser.add_argument("--max-pairs", type=int, help="at most the first N pairs of --train and of --synthetic")
    parser.add_argument("--paired-runs", type=int, metavar="N",
                        help="with --synthetic: train real only and real + synthetic with each of N seeds (--seed, --seed + 1, ...) "
                             "and report the paired gain with its standard error (OUT/comparison.json)")
    parser.add_argument("--resume", action="store_true", help="continue an unfinished evaluation in --out")
    add_common_flags(parser)
    parser.set_defaults(handler=_run_evaluate_segmentation)


def parse_test_sets(values: list[str] | dict[str, str], flag: str = "--test") -> dict[str, str]:
    """``NAME=DIR`` flags (or a config file's mapping) as {name: folder}."""
    if isinstance(values, dict):
        return {str(name): str(folder) for name, folder in values.items()}
    sets: dict[str, str] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise InputError(flag, "NAME=DIR (a name for the set, then its folder)", repr(value))
        if name in sets:
            raise InputError(flag, "a different name for every set", f"{name!r} twice")
        sets[name] = folder
    return sets


def format_results(results: dict[str, Any]) -> str:
    """A short table: one row per test set (mean +- std over images)."""

    def number(value: float | None, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    rows = [f"{'test set':<20} {'images':>6}  {'Dice':>13}  {'IoU':>13}  {'HD95 (px)':>14}  undefined"]
    for name, block in results["test"].items():
        rows.append(f"{name:<20} {block['count']:>6}  {number(block['dice'])} ± {number(block['dice_std'])}  "
                    f"{number(block['iou'])} ± {number(block['iou_std'])}  {number(block['hd95'], 1):>6} ± {number(block['hd95_std'], 1):>5}  "
                    f"{block['hd95_undefined']:>9}")
    rows.append(f"{results['model']} trained {results['train_seconds']:.0f} s on {results['real_pairs']} real + "
                f"{results['synthetic_pairs']} synthetic pairs at {results['resolution']} px")
    return "\n".join(rows)


def _run_evaluate_segmentation(args: argparse.Namespace) -> int:
    from pathlib import Path

    from alignflow.cli_helpers import read_options, run_with_progress
    from alignflow.downstream.config import DownstreamConfig
    from alignflow.downstream.evaluate import RESULTS_FILE, evaluate_segmentation
    from alignflow.runs.outputs import check_not_inputs

    values = read_options(args, drop=("resume", "paired_runs"))
    for key in ("test", "validation"):
        if key in values:
            values[key] = parse_test_sets(values[key], f"--{key}")
    config = DownstreamConfig.from_dict(values)
    # Its --out is a run folder (resumable, like train's): never one that is or holds the pairs it reads.
    check_not_inputs(config.out, {key: value for key, value in config.to_dict().items() if key != "out"})
    resume = getattr(args, "resume", False)
    if hasattr(args, "paired_runs"):
        from alignflow.downstream.compare import COMPARISON_FILE, compare_with_synthetic, describe_gain

        comparison = run_with_progress(lambda listeners: compare_with_synthetic(config, args.paired_runs, listeners, resume))
        for name, block in comparison["test"].items():
            print(describe_gain(name, block, len(comparison["seeds"])))
        print(f"comparison written to {Path(config.out) / COMPARISON_FILE} (each run in {Path(config.out) / 'seed<k>'})")
        return 0
    results = run_with_progress(lambda listeners: evaluate_segmentation(config, listeners, resume=resume))
    print(format_results(results))
    print(f"results written to {Path(config.out) / RESULTS_FILE}")
    return 0
