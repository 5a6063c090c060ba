"""Downstream evaluation: what a segmenter trained with or without synthetic pairs scores on target test sets.

    OUT/splits.json      the exact training, synthetic and test files used (resolved paths), so the run is reproducible
    OUT/results.json     per test set: mean/std of Dice, IoU, HD95 (+ undefined count), per class, per image; the
                         training time and the config; with --validate-every the learning curve (``curve``: one row
                         per validation step, the mean Dice of every validation set)
    OUT/predictions/NAME/STEM.png   predicted class ids at the scoring resolution (binary: 0/255)
    OUT/model/ (unet, segformer) or OUT/segmenter/ (medflowseg)        the trained model
    OUT/config.json, events.jsonl, checkpoints/, previews/, summary.json   the training run, as every run

Everything, training and scoring, happens at ``config.resolution``: images and masks are squashed to that square
(antialiased / nearest neighbour) exactly as ``alignflow.data.load_pairs`` loads training pairs; HD95 is in pixels
of that square.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignflow.atomic import atomic_write_json
from alignflow.data import SegmentationFolder, load_pairs, scan_dataset, write_mask
from alignflow.data.shares import equal_share_repeats
from alignflow.device import autocast, resolve_device
from alignflow.downstream.config import SCORING_OPTIONS, DownstreamConfig
from alignflow.downstream.metrics import score_segmentations, summarize_scores
from alignflow.downstream.models import load_model, predict_labels
from alignflow.downstream.training import VALIDATION_EVENT, DownstreamTrainer, TrainingPairs
from alignflow.errors import InputError, check_known_keys
from alignflow.runs.events import EventLog, Listener, read_events

RESULTS_FILE = "results.json"
SPLITS_FILE = "splits.json"
PREDICTIONS_DIR = "predictions"
Predictor = Callable[[torch.Tensor], torch.Tensor]  # images [N, 3, R, R] in [0, 1] -> class ids [N, R, R]

# MedFlowSeg: sampling options of model_options (the rest go to its SegmenterTrainConfig). Defaults: 10 samples x 5
# Euler steps, the best cell of docs/benchmarks.md's MedFlowSeg sweep (50 steps scored no better).
MEDFLOWSEG_SAMPLING = {"num_samples": 10, "num_steps": 5, "fusion": "staple", "sample_batch_size": 4}
MEDFLOWSEG_TRAINING = {"preset", "model", "weight_decay", "lambda_aux", "alpha_ce", "ema_decay", "flip_augment"}


def evaluate_segmentation(config: DownstreamConfig, listeners: list[Listener] | None = None, resume: bool = False) -> dict[str, Any]:
    """Engine API: train ``config.model`` on ``config.train`` (+ ``config.synthetic``), score it on every test set and
    return the results (the content of OUT/results.json).

    A finished evaluation of the same config in ``config.out`` is returned as it is, without training again; a killed
    one continues from its last checkpoint with ``resume=True``.
    """
    config.validate()
    out = Path(config.out)
    finished, rescore = _finished_results(out, config)
    if finished is not None:
        return finished
    resume = resume or rescore  # the trained model is there: the run returns it, and it is scored again
    if not resume and (out / "config.json").exists():
        raise InputError(out, "a new output folder (this one holds an unfinished evaluation: add --resume to continue it, or choose another --out)")
    train = scan_dataset(Path(config.train))
    synthetic = [scan_dataset(Path(folder)) for folder in config.synthetic_folders]
    tests = {name: _scan_test(name, folder) for name, folder in config.test.items()}
    validation = {name: _scan_test(name, folder, "--validation") for name, folder in config.validation.items()}
    num_classes = max(folder.num_classes for folder in [train, *synthetic, *tests.values(), *validation.values()])
    train_count = _count(train, config.max_pairs)
    synthetic_counts = [_count(folder, config.max_pairs) for folder in synthetic]
    synthetic_count = sum(synthetic_counts)
    _write_splits(out, config, train, train_count, synthetic, synthetic_counts, tests, resume, validation)
    pairs = TrainingPairs(*load_pairs(train, config.resolution, range(train_count)),
                          *equal_shares([load_pairs(folder, config.resolution, range(count)) for folder, count in zip(synthetic, synthetic_counts)],
                                        config.resolution), num_classes,
                          {name: load_pairs(folder, config.resolution) for name, folder in validation.items()})
    if config.model == "medflowseg":
        predict, model_folder = _train_medflowseg(config, pairs, listeners, resume)
    else:
        predict, model_folder = _train_network(config, pairs, listeners, resume)
    summary = json.loads((out / "summary.json").read_text())
    log = EventLog(out, listeners)
    scores = {}
    for index, (name, folder) in enumerate(tests.items()):
        scores[name] = _score_test_set(folder, config.resolution, num_classes, predict, out / PREDICTIONS_DIR / name)
        log.emit("progress", stage="test", step=index + 1, total=len(tests), test_set=name)
    results = {
        "test": scores, "train_seconds": summary["seconds"], "peak_memory_mb": summary.get("peak_memory_mb"),
        "model": config.model, "model_folder": str(model_folder), "num_classes": num_classes, "resolution": config.resolution,
        "real_pairs": train_count, "synthetic_pairs": synthetic_count, "config": _comparable(config),
        **({"curve": learning_curve(out)} if config.validate_every else {}),
    }
    atomic_write_json(out / RESULTS_FILE, results)
    log.emit("done", stage="test", total=len(tests), results=str(out / RESULTS_FILE),
             **{f"dice_{name}": block["dice"] for name, block in scores.items()})
    return results


def learning_curve(out: Path) -> list[dict[str, Any]]:
    """The validation events of the run in ``out``, one row per step ({"step": n, NAME: mean Dice, ...}); a step
    validated twice (the run was resumed from an earlier checkpoint) keeps its last value (they are equal)."""
    rows = {event["step"]: {"step": event["step"], **event["dice"]} for event in read_events(out)
            if event.get("type") == VALIDATION_EVENT}
    return [rows[step] for step in sorted(rows)]


def _defaults() -> dict[str, Any]:
    return {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(DownstreamConfig)}  # type: ignore[misc]


def _comparable(config: DownstreamConfig | dict[str, Any]) -> dict[str, Any]:
    """A config as results.json stores it (JSON types, data folders as absolute paths), to tell whether a stored
    result belongs to a config however its folders were spelled (results stored with relative paths included)."""
    # Options added since a result was stored count as their defaults (which is what that run used).
    values = json.loads(json.dumps({**_defaults(), **(config if isinstance(config, dict) else config.to_dict())}, default=str))
    for key in ("train", "synthetic", "feedback_generator"):
        if isinstance(values.get(key), list):
            values[key] = [str(Path(folder).resolve()) for folder in values[key]]
        elif values.get(key):
            values[key] = str(Path(values[key]).resolve())
    for key in ("test", "validation"):
        if isinstance(values.get(key), dict):
            values[key] = {name: str(Path(folder).resolve()) for name, folder in values[key].items()}
    return values


def _finished_results(out: Path, config: DownstreamConfig) -> tuple[dict[str, Any] | None, bool]:
    """(the stored results of this config, or None; whether they differ from it only in how the model is scored)."""
    path = out / RESULTS_FILE
    if not path.is_file():
        return None, False
    results = json.loads(path.read_text(encoding="utf-8"))
    stored, wanted = _comparable(dict(results.get("config", {}))), _comparable(config)
    stored.pop("out", None), wanted.pop("out", None)  # the same folder, however it was spelled
    changed = sorted(key for key in set(stored) | set(wanted) if stored.get(key) != wanted.get(key))
    if not changed:
        return results, False
    if set(changed) <= set(SCORING_OPTIONS):
        return None, True
    raise InputError(path, "results of this configuration, or another --out folder", f"results of another configuration (differs in {changed})")


def _scan_test(name: str, folder: str, flag: str = "--test") -> SegmentationFolder:
    try:
        return scan_dataset(Path(folder))
    except InputError as error:
        raise InputError(f"{flag} {name}={folder}", "a labelled dataset folder with images/ and masks/", str(error)) from None


def _count(folder: SegmentationFolder, max_pairs: int | None) -> int:
    return len(folder) if max_pairs is None else min(max_pairs, len(folder))


def _no_pairs(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(0, 3, resolution, resolution), torch.zeros(0, resolution, resolution, dtype=torch.long)


def equal_shares(sets: list[tuple[torch.Tensor, torch.Tensor]], resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One pool of synthetic (images, masks) in which every set has about the same number of pairs: each set is
    repeated ceil(largest / its size) times, so a batch draws from each about equally (one set: itself)."""
    if not sets:
        return _no_pairs(resolution)
    repeats = equal_share_repeats([len(images) for images, _ in sets])
    return (torch.cat([images.repeat(count, 1, 1, 1) for (images, _), count in zip(sets, repeats)]),
            torch.cat([masks.repeat(count, 1, 1) for (_, masks), count in zip(sets, repeats)]))


def _files(folder: SegmentationFolder, count: int) -> list[dict[str, str]]:
    return [{"stem": pair.stem, "image": str(pair.image.resolve()), "mask": str(pair.mask.resolve())} for pair in folder.pairs[:count]]


def _write_splits(out: Path, config: DownstreamConfig, train: SegmentationFolder, train_count: int,
                  synthetic: list[SegmentationFolder], synthetic_counts: list[int], tests: dict[str, SegmentationFolder], resume: bool,
                  validation: dict[str, SegmentationFolder]) -> None:
    """OUT/splits.json (the synthetic files of every folder, in order, each once); a resumed run must find the same
    files it started with."""
    splits = {"train": _files(train, train_count),
              "synthetic": [row for folder, count in zip(synthetic, synthetic_counts) for row in _files(folder, count)],
              "test": {name: _files(folder, len(folder)) for name, folder in tests.items()}}
    if validation:
        splits["validation"] = {name: _files(folder, len(folder)) for name, folder in validation.items()}
    path = out / SPLITS_FILE
    if resume and path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != splits:
            changed = [key for key in splits if previous.get(key) != splits[key]]
            raise InputError(path, "the same training, synthetic and test files as when the run started", f"other files in {changed}")
    atomic_write_json(path, splits)


# ------------------------------------------------------------------------------------------------- the models


def _train_network(config: DownstreamConfig, pairs: TrainingPairs, listeners: list[Listener] | None, resume: bool) -> tuple[Predictor, Path]:
    folder = DownstreamTrainer(config, pairs, listeners, resume).run()
    device = resolve_device(config.device)
    model, _ = load_model(folder, device)

    def predict(images: torch.Tensor) -> torch.Tensor:
        with autocast(device, config.precision):
            return predict_labels(model, images.to(device), config.batch_size, config.test_time_flips).cpu()

    return predict, folder


def medflowseg_training_pairs(pairs: TrainingPairs, share: float | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One tensor pool for MedFlowSeg's trainer, which draws its batches uniformly from the pairs it is given: the
    real pairs, plus synthetic ones cycled (in a seeded order) to round(s R / (1 - s)) pairs for a share s of R
    real pairs, so s of every batch is synthetic in expectation (not per batch, as for unet/segformer). With share
    None the pool is simply real + synthetic; with share 0 it is real only."""
    real, synthetic = len(pairs.real_images), len(pairs.synthetic_images)
    if share is None or synthetic == 0:
        wanted = synthetic
    else:
        wanted = round(share * real / (1.0 - share))
    order = torch.randperm(synthetic, generator=torch.Generator().manual_seed(seed)) if synthetic else torch.zeros(0, dtype=torch.long)
    chosen = order[torch.arange(wanted) % max(synthetic, 1)] if wanted else torch.zeros(0, dtype=torch.long)
    return (torch.cat([pairs.real_images, pairs.synthetic_images[chosen]]),
            torch.cat([pairs.real_masks, pairs.synthetic_masks[chosen]]))


def _train_medflowseg(config: DownstreamConfig, pairs: TrainingPairs, listeners: list[Listener] | None, resume: bool) -> tuple[Predictor, Path]:
    """MedFlowSeg's own trainer (``alignflow.segmentation``) in OUT, on the pool of :func:`medflowseg_training_pairs`;
    test images are segmented with an ensemble fused by STAPLE (``model_options``: num_samples, num_steps, fusion)."""
    from alignflow.segmentation.config import SegmenterTrainConfig
    from alignflow.segmentation.inference import load_segmenter, segment_images
    from alignflow.segmentation.trainer import train_segmenter

    options = dict(config.model_options)
    check_known_keys(options, MEDFLOWSEG_TRAINING | set(MEDFLOWSEG_SAMPLING), "model_options")
    sampling = {key: options.pop(key, default) for key, default in MEDFLOWSEG_SAMPLING.items()}
    train_config = SegmenterTrainConfig.from_dict({
        "preset": "small", **options, "out": config.out, "resolution": config.resolution, "steps": config.steps,
        "batch_size": config.batch_size, "lr": config.learning_rate, "num_classes": pairs.num_classes, "seed": config.seed,
        "device": config.device, "precision": config.precision, "log_every": config.log_every,
        "checkpoint_every": config.checkpoint_every, "preview_every": config.preview_every})
    images, masks = medflowseg_training_pairs(pairs, config.synthetic_share, config.seed)
    folder = train_segmenter(train_config, listeners, resume, images=images, masks=masks)
    segmenter = load_segmenter(folder, config.device)

    def predict(images: torch.Tensor) -> torch.Tensor:
        result = segment_images(segmenter, images, num_samples=sampling["num_samples"], num_steps=sampling["num_steps"],
                                seed=config.seed, batch_size=sampling["sample_batch_size"], fusion=sampling["fusion"],
                                precision=config.precision)
        return torch.from_numpy(np.stack([item.labels for item in result.images])).long()

    return predict, folder


# ------------------------------------------------------------------------------------------------- scoring


def _score_test_set(folder: SegmentationFolder, resolution: int, num_classes: int, predict: Predictor, predictions: Path) -> dict[str, Any]:
    images, masks = load_pairs(folder, resolution)
    predicted = predict(images)
    for pair, labels in zip(folder.pairs, predicted):
        write_mask(predictions / f"{pair.stem}.png", labels.numpy().astype(np.uint8))
    scores = score_segmentations(predicted, masks, num_classes)
    return {"folder": str(folder.root), **summarize_scores(scores, [pair.stem for pair in folder.pairs])}
