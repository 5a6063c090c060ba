"""``alignflow train`` (stage 1), ``alignflow align`` (stage 2) and ``alignflow generate`` (pairs from masks)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignflow.cli_helpers import TerminalProgress, add_training_flags, read_options, run_with_progress, with_stored_options

DEFAULT_STRENGTH = 0.5  # generate --from-images: half way between the source image and generation from noise


def register(commands: argparse._SubParsersAction, add_common_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    train = commands.add_parser("train", help="stage 1: train the mask-conditioned generator on the source domain", argument_default=argparse.SUPPRESS)
    add_training_flags(train)
    train.add_argument("--init", help="continue from this generator (run folder or generator folder)")
    train.add_argument("--resolution", type=int, help="image side in pixels (multiple of 8; default 128)")
    train.add_argument("--w-ar", type=float, help="Alignment Regularization weight (mask head; docs/label-drift.md); 0 = off")
    train.add_argument("--flip-augment", action="store_true",
                       help="also train on every pair's horizontal, vertical and double flip (for small source sets)")
    add_common_flags(train)
    train.set_defaults(handler=lambda args: _run_training(args, 1))

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
    align.add_argument("--flip-augment", action="store_true",
                       help="the denoising term also sees every pair's flips (as in a stage 1 trained with --flip-augment)")
    align.add_argument("--translation-strength", type=float,
                       help="translation mode: start each trajectory from its pair's real latent noised to t = 1 - s (default off: from noise)")
    add_common_flags(align)
    align.set_defaults(handler=lambda args: _run_training(args, 2))

    generate = commands.add_parser("generate", help="generate images for masks", argument_default=argparse.SUPPRESS)
    # No defaults here: a flag the user did not type must not override the --config file (GenerateConfig has them).
    generate.add_argument("--generator", help="a trained generator (run folder or generator folder)")
    generate.add_argument("--masks", help="a dataset folder (images/ + masks/) or a folder of mask files")
    generate.add_argument("--out", help="output folder (images/, masks/, manifest.json)")
    generate.add_argument("--steps", type=int, help="Euler steps (default 28, the paper's)")
    generate.add_argument("--guidance", type=float, help="classifier-free guidance scale (default 2.0)")
    generate.add_argument("--batch-size", type=int, help="default 16")
    generate.add_argument("--limit", type=int, help="at most this many masks")
    generate.add_argument("--evaluator", help="segmenter (alignflow train-evaluator) scoring each image's mask fidelity into the manifest")
    generate.add_argument("--candidates", type=int, help="K images per mask; keep the one --evaluator segments best (default 1)")
    generate.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out (never one holding the masks or a run)")
    generate.add_argument("--from-images", action="store_true",
                          help="translate each real image of --masks (a dataset folder) under its own mask instead of generating from noise")
    generate.add_argument("--strength", type=float, help="translation strength s in [0, 1] with --from-images (default 0.5): "
                          "0 keeps the source image, 1 is generation from noise")
    add_common_flags(generate)
    generate.set_defaults(handler=_run_generate)


def _run_training(args: argparse.Namespace, stage: int) -> int:
    from alignflow.generator.config import TrainConfig
    from alignflow.generator.training import train
    from alignflow.runs.loop import launched_as_main_process

    values = read_options(args, drop=("resume",))
    if "resolution" in values:
        values.setdefault("generator", {})["resolution"] = values.pop("resolution")
    if "references" in values and isinstance(values["references"], list) and len(values["references"]) == 1:
        values["references"] = values["references"][0]
    resume = getattr(args, "resume", False)
    config = TrainConfig.from_dict({**with_stored_options(values, resume), "stage": stage})
    folder = run_with_progress(lambda listeners: train(config, listeners, resume=resume))
    if launched_as_main_process():  # under accelerate launch every process gets here; one line is enough
        print(f"generator written to {folder}")
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    from alignflow.data import list_images, scan_dataset
    from alignflow.device import resolve_device
    from alignflow.errors import InputError
    from alignflow.generator.config import GenerateConfig
    from alignflow.generator.filtering import check_candidates
    from alignflow.generator.pairs import generate_pairs
    from alignflow.generator.sampling import load_generator
    from alignflow.runs.outputs import check_output_folder

    config = GenerateConfig.from_dict(read_options(args))  # every option checked before anything is loaded
    check_candidates(config.candidates)
    translation = _translation_options(config)
    masks_dir = Path(config.masks)
    if translation and not (masks_dir / "images").is_dir():
        raise InputError("--masks", "a dataset folder with images/ and masks/ when --from-images is given", str(masks_dir))
    limit = config.limit
    if (masks_dir / "masks").is_dir():
        pairs_found = scan_dataset(masks_dir).pairs[:limit]
        mask_paths = [pair.mask for pair in pairs_found]
        if translation:  # each real image is translated under its own mask
            translation["source_images"] = [pair.image for pair in pairs_found]
    else:
        mask_paths = list_images(masks_dir)[:limit]
    check_output_folder(config.out, "generate", inputs=[mask_paths, config.masks, config.generator], overwrite=config.overwrite)
    device = resolve_device(config.device)
    generator = load_generator(config.generator, device)
    evaluator = None
    if config.evaluator:
        from alignflow.fidelity.segmenter import load_segmenter

        evaluator = load_segmenter(config.evaluator, device)
    candidates = config.candidates
    bars = TerminalProgress()
    try:
        pairs = generate_pairs(
            generator, mask_paths, Path(config.out), evaluator=evaluator, candidates=candidates,
            seed=config.seed, num_steps=config.steps, guidance_scale=config.guidance,
            batch_size=config.batch_size, precision=config.precision, on_progress=bars.progress,
            overwrite=config.overwrite, **translation,
        )
    finally:
        bars.close()
    print(f"{len(pairs.stems)} image-mask pairs written to {pairs.folder}")
    if pairs.scores is not None:
        best = f"best of {candidates}, " if candidates > 1 else ""
        print(f"mask fidelity ({best}{evaluator.kind} evaluator): mean Dice {float(pairs.scores.dice.mean()):.3f}, "
              f"IoU {float(pairs.scores.iou.mean()):.3f}")
    return 0


def _translation_options(config: Any) -> dict:
    """``strength`` for generate_pairs with --from-images (source images are added once the dataset is read); {}
    without it. A --strength without --from-images is refused: there would be nothing to translate."""
    from alignflow.errors import InputError
    from alignflow.generator.sampling import check_strength

    if not config.from_images:
        if config.strength is not None:
            raise InputError("--strength", "--from-images as well (the strength of translating real images)", "no --from-images")
        return {}
    return {"strength": check_strength(DEFAULT_STRENGTH if config.strength is None else config.strength)}
