"""``alignflow`` command line: a thin client of the engine API (train, align, generate, augment).

Options come from ``--config FILE`` (YAML/JSON, same names as the flags) and are overridden by the flags given.
Bad input prints one line naming the file or parameter and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from .errors import InputError

EXIT_INPUT_ERROR = 2
T = TypeVar("T")


IMAGE_STAGES = ("encode", "generate", "masks:generate", "export", "segment")  # stages whose progress counts images, not steps


class ProgressPrinter:
    """Renders the event stream as one tqdm bar per stage, with the loss terms as the postfix."""

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        stage = str(event.get("stage", ""))
        if kind in ("start", "progress", "resume") and "total" in event:
            bar = self._bar(stage, event["total"])
            bar.n = event.get("step", 0)
            postfix = {k: f"{v:.4f}" for k, v in event.items() if k.startswith("loss") and isinstance(v, float)}
            if postfix:
                bar.set_postfix(postfix, refresh=False)
            bar.refresh()
        elif kind in ("warning", "error"):
            tqdm.write(f"{kind}: {event.get('message')}", file=sys.stderr)
        elif kind == "done" and stage in self.bars:
            self.bars.pop(stage).close()

    def _bar(self, stage: str, total: int) -> tqdm:
        if stage not in self.bars or self.bars[stage].total != total:
            self.close()  # one bar at a time: stages run one after another
            label = {"1": "stage 1", "2": "stage 2"}.get(stage, stage)
            self.bars[stage] = tqdm(total=total, desc=label, unit="img" if stage.startswith(IMAGE_STAGES) else "step", dynamic_ncols=True)
        return self.bars[stage]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def run_with_progress(job: Callable[[list[Callable[[dict[str, Any]], None]]], T]) -> T:
    """Run an engine call with a progress bar on the terminal, drawn from its event stream."""
    printer = ProgressPrinter()
    try:
        return job([printer])
    finally:
        printer.close()


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML or JSON file of options (flags given here override it)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocast speeds up CPU training ~1.4x")
    parser.add_argument("--seed", type=int)


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every training command shares (also used by the engine areas' own training commands)."""
    parser.add_argument("--source", help="labelled source dataset: a folder with images/ and masks/")
    parser.add_argument("--out", help="run folder")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--max-pairs", type=int, help="train on the first N pairs only")
    parser.add_argument("--log-every", type=int, help="a progress event every N steps")
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--preview-every", type=int)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignflow", description=__doc__.splitlines()[0], argument_default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="stage 1: train the mask-conditioned generator on the source domain", argument_default=argparse.SUPPRESS)
    add_training_flags(train)
    train.add_argument("--init", help="continue from this generator (run folder or generator folder)")
    train.add_argument("--resolution", type=int, help="image side in pixels (multiple of 8; default 128)")
    train.add_argument("--w-ar", type=float, help="Alignment Regularization weight (mask head; docs/label-drift.md); 0 = off")
    _common(train)

    align = commands.add_parser("align", help="stage 2: align the generator to target-domain reference images", argument_default=argparse.SUPPRESS)
    add_training_flags(align)
    align.add_argument("--init", help="the stage-1 generator (run folder or generator folder)")
    align.add_argument("--references", nargs="+", help="folder or files of target-domain reference images")
    align.add_argument("--num-references", type=int, help="use this many of them (seeded random subset)")
    align.add_argument("--w-align", type=float)
    align.add_argument("--t-is", type=int)
    align.add_argument("--reward", choices=["mmd", "skl"])
    align.add_argument("--frozen-model", choices=["current", "snapshot"])
    align.add_argument("--feature-encoder", help="efficientnet-lite0 (default) or dino:<folder or hub id>")
    align.add_argument("--align-batch-size", type=int)
    align.add_argument("--w-mask", type=float, help="weight of the mask-consistency loss L_M (docs/label-drift.md); 0 = off")
    align.add_argument("--mask-segmenter", help="L_M's frozen segmenter (alignflow train-evaluator --role reward)")
    align.add_argument("--w-ar", type=float, help="Alignment Regularization weight in the denoising term; 0 = off")
    _common(align)

    generate = commands.add_parser("generate", help="generate images for masks", argument_default=argparse.SUPPRESS)
    generate.add_argument("--generator", required=True, help="a trained generator (run folder or generator folder)")
    generate.add_argument("--masks", required=True, help="a dataset folder (images/ + masks/) or a folder of mask files")
    generate.add_argument("--out", required=True, help="output folder (images/, masks/, manifest.json)")
    generate.add_argument("--steps", type=int, default=28, help="Euler steps (paper: 28)")
    generate.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale")
    generate.add_argument("--batch-size", type=int, default=16)
    generate.add_argument("--limit", type=int, help="at most this many masks")
    generate.add_argument("--evaluator", help="segmenter (alignflow train-evaluator) scoring each image's mask fidelity into the manifest")
    generate.add_argument("--candidates", type=int, default=1, help="K images per mask; keep the one --evaluator segments best")
    _common(generate)

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
    augment.add_argument("--evaluator", help="segmenter (alignflow train-evaluator) for the mask fidelity of every model in the report")
    _common(augment)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands, _common)
    return parser


# Engine areas that add their own subcommands. Each module defines ``register(commands, add_common_flags)``, which
# adds its parsers with ``set_defaults(handler=...)``; a handler takes the parsed args and returns an exit code.
# The modules import their heavy dependencies inside the handlers, so ``alignflow --help`` stays fast.
COMMAND_MODULES: tuple[str, ...] = ("alignflow.advisor.commands", "alignflow.downstream.commands", "alignflow.export.commands", "alignflow.fidelity.commands", "alignflow.masks.commands", "alignflow.metrics.commands", "alignflow.runners.commands", "alignflow.segmentation.commands")


def _options(args: argparse.Namespace, drop: Sequence[str] = ()) -> dict[str, Any]:
    from .training.config import read_config_file

    values = read_config_file(args.config) if getattr(args, "config", None) else {}
    values.update({key: value for key, value in vars(args).items() if key not in ("command", "config", "handler", *drop)})
    return values


def _run_training(args: argparse.Namespace, stage: int) -> int:
    from .training.config import TrainConfig
    from .training.loop import launched_as_main_process
    from .training.trainer import train

    values = _options(args, drop=("resume",))
    if "resolution" in values:
        values.setdefault("generator", {})["resolution"] = values.pop("resolution")
    if "references" in values and isinstance(values["references"], list) and len(values["references"]) == 1:
        values["references"] = values["references"][0]
    config = TrainConfig.from_dict({**values, "stage": stage})
    folder = run_with_progress(lambda listeners: train(config, listeners, resume=getattr(args, "resume", False)))
    if launched_as_main_process():  # under accelerate launch every process gets here; one line is enough
        print(f"generator written to {folder}")
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    from .augment import generation_provenance, write_synthetic_pairs
    from .data import list_images, load_masks, scan_dataset
    from .device import resolve_device
    from .fidelity.filtering import check_candidates, generate_with_fidelity
    from .generation import load_generator

    values = _options(args)
    check_candidates(values["candidates"])  # before loading anything
    masks_dir = Path(values["masks"])
    if (masks_dir / "masks").is_dir():
        mask_paths = [pair.mask for pair in scan_dataset(masks_dir).pairs]
    else:
        mask_paths = list_images(masks_dir)
    mask_paths = mask_paths[: values.get("limit")] if values.get("limit") else mask_paths
    device = resolve_device(values.get("device", "auto"))
    generator = load_generator(values["generator"], device)
    resolution = generator.config.resolution
    masks = load_masks(mask_paths, resolution)
    if int(masks.max()) >= generator.config.num_classes:
        raise InputError(masks_dir, f"class ids below {generator.config.num_classes} (the generator's classes)", f"id {int(masks.max())}")
    evaluator = None
    if values.get("evaluator"):
        from .fidelity.segmenter import load_segmenter

        evaluator = load_segmenter(values["evaluator"], device)
    candidates = values["candidates"]
    with tqdm(total=len(mask_paths) * candidates, desc="generate", unit="img") as bar:
        generated = generate_with_fidelity(
            generator, masks, evaluator=evaluator, candidates=candidates, seed=values.get("seed", 0),
            num_steps=values["steps"], guidance_scale=values["guidance"], batch_size=values["batch_size"],
            precision=values.get("precision", "fp32"), on_progress=lambda done, total: bar.update(done - bar.n),
        )
    provenance = generation_provenance(generator, values["guidance"], values["steps"])
    out = write_synthetic_pairs(Path(values["out"]), [p.stem for p in mask_paths], generated.images, mask_paths,
                                generated.seeds, provenance, generated.rows)
    print(f"{len(mask_paths)} image-mask pairs written to {out}")
    if generated.scores is not None:
        best = f"best of {candidates}, " if candidates > 1 else ""
        print(f"mask fidelity ({best}{evaluator.kind} evaluator): mean Dice {float(generated.scores.dice.mean()):.3f}, "
              f"IoU {float(generated.scores.iou.mean()):.3f}")
    return 0


def _run_augment(args: argparse.Namespace) -> int:
    from .augment import AugmentConfig, augment, format_report

    values = _options(args, drop=("demo",))
    if getattr(args, "demo", False):
        from .data.phantom import phantom_dir

        root = phantom_dir()
        values = {**DEMO_DEFAULTS, "source": str(root / "source"), "references": str(root / "target" / "images"),
                  "target": str(root / "target" / "images"), **values}
        values.setdefault("out", "runs/demo")
    config = AugmentConfig.from_dict(values)
    if not config.source or not config.references or not config.out:
        raise InputError("alignflow augment", "--source, --references and --out (or --demo)", "missing options")
    # finished stages in --out are reused, killed ones resumed
    report = run_with_progress(lambda listeners: augment(config, listeners))
    print(format_report(report))
    print(f"report written to {Path(config.out) / 'report.json'}")
    return 0


# The bundled demo: small enough for a 2-core CPU in a few minutes (see docs/benchmarks.md for what it measures).
DEMO_DEFAULTS: dict[str, Any] = {
    "resolution": 128, "stage1_steps": 600, "stage2_steps": 150, "num_references": 8, "batch_size": 8,
    "sample_steps": 20, "num_generated": 32,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "train": lambda: _run_training(args, 1),
        "align": lambda: _run_training(args, 2),
        "generate": lambda: _run_generate(args),
        "augment": lambda: _run_augment(args),
    }
    handler: Callable[[], int] = handlers.get(args.command) or (lambda: args.handler(args))
    try:
        return handler()
    except InputError as error:
        print(f"alignflow {args.command}: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print(f"alignflow {args.command}: interrupted; run again with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
