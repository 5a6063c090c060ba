"""``alignflow train-segmenter`` and ``alignflow segment``: thin CLI clients of the MedFlowSeg engine API."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from alignflow.cli_helpers import add_training_flags, read_options, with_stored_options


def register(commands: Any, add_common_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    train = commands.add_parser("train-segmenter", help="train MedFlowSeg (flow-matching segmentation) on a labelled dataset", argument_default=argparse.SUPPRESS)
    add_training_flags(train)
    train.add_argument("--init", help="start from this trained segmenter (fine-tuning; its architecture is used)")
    train.add_argument("--preset", choices=["small", "paper"], help="model size: small (CPU, 128 px; default) or paper (256 px)")
    train.add_argument("--resolution", type=int, help="image side in pixels (multiple of 16; default: the preset's)")
    train.add_argument("--num-classes", type=int, help="class count when the masks may not show every class")
    add_common_flags(train)
    train.set_defaults(handler=_run_train_segmenter)

    segment = commands.add_parser("segment", help="segment images with a trained MedFlowSeg: fused labels, uncertainty maps, samples", argument_default=argparse.SUPPRESS)
    segment.add_argument("--segmenter", help="a trained segmenter (train-segmenter run folder or its segmenter/ folder)")
    segment.add_argument("--images", nargs="+", help="a folder of images or image files")
    segment.add_argument("--out", help="output folder (labels/, uncertainty/, posterior/, samples/, manifest.json)")
    segment.add_argument("--num-samples", type=int, help="ensemble size M (default 10, the paper's)")
    segment.add_argument("--steps", type=int, help="Euler steps per sample (default 50, the paper's)")
    segment.add_argument("--fusion", choices=["staple", "vote"], help="STAPLE (default) or majority vote")
    segment.add_argument("--batch-size", type=int, help="images per model call (each holds M label maps; default 4)")
    segment.add_argument("--limit", type=int, help="at most this many images")
    segment.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    add_common_flags(segment)
    segment.set_defaults(handler=_run_segment)


def _run_train_segmenter(args: argparse.Namespace) -> int:
    from alignflow.cli_helpers import run_with_progress
    from alignflow.segmentation.config import SegmenterTrainConfig
    from alignflow.segmentation.trainer import train_segmenter

    resume = getattr(args, "resume", False)
    config = SegmenterTrainConfig.from_dict(with_stored_options(read_options(args, drop=("resume",)), resume))
    folder = run_with_progress(lambda listeners: train_segmenter(config, listeners, resume=resume))
    print(f"segmenter written to {folder}")
    return 0


def _run_segment(args: argparse.Namespace) -> int:
    from alignflow.atomic import atomic_directory
    from alignflow.cli_helpers import run_with_progress
    from alignflow.data import list_images, read_image
    from alignflow.errors import InputError
    from alignflow.runs.outputs import check_output_folder
    from alignflow.segmentation.config import SegmentConfig
    from alignflow.segmentation.inference import load_segmenter, segment_images, write_segmentations

    config = SegmentConfig.from_dict(read_options(args))
    images = config.images
    paths = list_images(images[0] if isinstance(images, list) and len(images) == 1 else images)
    if config.limit:
        paths = paths[: config.limit]
    stems = [path.stem for path in paths]
    if len(set(stems)) < len(stems):
        twice = sorted({stem for stem in stems if stems.count(stem) > 1})
        raise InputError("--images", "images with distinct file stems (outputs are named by stem)", f"{twice[:5]} more than once")
    out = check_output_folder(config.out, "segment", inputs=[paths, images, config.segmenter], overwrite=config.overwrite)
    segmenter = load_segmenter(config.segmenter, config.device)
    result = run_with_progress(lambda listeners: segment_images(
        segmenter, [read_image(path) for path in paths], num_samples=config.num_samples, num_steps=config.steps,
        seed=config.seed, batch_size=config.batch_size, fusion=config.fusion, precision=config.precision,
        on_image=lambda done, total: listeners[0]({"type": "progress", "stage": "segment", "step": done, "total": total}),
    ))
    with atomic_directory(out) as tmp:  # all of it or nothing; an earlier segmentation stays until this one is complete
        write_segmentations(tmp, stems, result)
    print(f"{len(paths)} images segmented ({config.num_samples} samples x {config.steps} steps, {config.fusion}) into {out}")
    return 0
