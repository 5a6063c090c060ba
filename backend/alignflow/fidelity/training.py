"""Training of the evaluator and of the reward segmenter (``alignflow train-evaluator``), on the engine's shared loop.

    RUN/config.json, events.jsonl, checkpoints/, previews/, summary.json   as every training run
    RUN/segmenter/   model.safetensors + segmenter.json (config; provenance: role, kind, training images)

Three kinds, from the role and the data:
- ``benchmark`` evaluator: source images plus a labelled target pool (``target``), as a benchmark has;
- ``source-only`` evaluator: source images with strong photometric augmentation, for users with source labels only;
- ``reward`` segmenter (stage-2 L_M): source images with strong photometric augmentation.
The source is split once into two fixed halves; by default the reward segmenter trains on the first and every
evaluator on the second, so the judge never saw the reward's training images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignflow.config import DictConfig, section
from alignflow.data import load_pairs, mask_to_rgb, random_flips, scan_dataset, split_indices, to_uint8, write_image
from alignflow.device import autocast
from alignflow.errors import InputError
from alignflow.fidelity.photometric import augment_photometric, photometric_transform
from alignflow.fidelity.segmenter import ROLE_DEFAULTS, ROLES, SEGMENTER_DIR, Segmenter, SegmenterConfig, save_segmenter
from alignflow.runs.events import Listener
from alignflow.runs.loop import TrainingRun, seed_everything

HALVES = ("auto", "all", "first", "second")
HALF_SPLIT_SEED = 0  # fixed, not the run's seed: runs with different seeds must still get disjoint halves
PREVIEW_COUNT = 4


@dataclass
class EvaluatorTrainConfig(DictConfig):
    """One segmenter training run (see the module docstring for roles and kinds)."""

    source: str = ""  # labelled source dataset: a folder with images/ and masks/
    target: str | None = None  # labelled target pool (images/ + masks/): makes a "benchmark" evaluator
    out: str = ""  # run folder
    role: str = "evaluator"  # "evaluator" (the mask-fidelity metric) or "reward" (stage-2 L_M)
    source_half: str = "auto"  # "auto" (reward: first, evaluator: second), "first", "second" or "all"
    photometric: bool | None = None  # None: on unless a target pool is given
    steps: int = 1500
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    flip_augment: bool = True
    max_pairs: int | None = None  # at most N pairs of each dataset (quick runs)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    checkpoint_every: int = 500
    preview_every: int = 500
    log_every: int = 10
    model: dict[str, Any] = field(default_factory=dict, metadata=section("alignflow.fidelity.segmenter:SegmenterConfig"))  # overrides

    fixed_on_resume = ("role", "model")  # the architecture (runs.loop: a resumed run keeps it)

    def validate(self) -> None:
        if not self.source:
            raise InputError("--source", "a dataset folder with images/ and masks/", "nothing")
        if not self.out:
            raise InputError("--out", "a run folder", "nothing")
        if self.role not in ROLES:
            raise InputError("--role", f"one of {', '.join(ROLES)}", repr(self.role))
        if self.source_half not in HALVES:
            raise InputError("--source-half", f"one of {', '.join(HALVES)}", repr(self.source_half))
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "preview_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(name, "a positive integer", str(getattr(self, name)))
        if self.lr <= 0:
            raise InputError("lr", "a positive learning rate", str(self.lr))
        autocast(torch.device("cpu"), self.precision)  # rejects an unknown precision by name

    @property
    def half(self) -> str:
        if self.source_half != "auto":
            return self.source_half
        return "first" if self.role == "reward" else "second"

    @property
    def use_photometric(self) -> bool:
        return self.photometric if self.photometric is not None else not self.target

    @property
    def kind(self) -> str:
        if self.role == "reward":
            return "reward"
        return "benchmark" if self.target else "source-only"

    def segmenter_config(self, num_classes: int) -> SegmenterConfig:
        return SegmenterConfig.from_dict({**ROLE_DEFAULTS[self.role], **self.model, "num_classes": num_classes}, "model")


def source_half_indices(count: int, half: str) -> list[int]:
    """Indices of the chosen half of ``count`` sorted pairs (a fixed seeded split, the same for every run)."""
    if half == "all":
        return list(range(count))
    first, second = split_indices(count, [count // 2], HALF_SPLIT_SEED)
    return [int(i) for i in (first if half == "first" else second)]


class EvaluatorTrainer(TrainingRun):
    """Dice + cross-entropy (MONAI ``DiceCELoss``) with random flips and, where chosen, photometric augmentation."""

    config: EvaluatorTrainConfig
    stage = "evaluator"
    result_folder = SEGMENTER_DIR

    def _prepare(self) -> None:
        from monai.losses import DiceCELoss

        config = self.config
        seed_everything(config.seed)
        source = scan_dataset(Path(config.source))
        target = scan_dataset(Path(config.target)) if config.target else None
        num_classes = max(source.num_classes, target.num_classes if target else 2)
        model_config = config.segmenter_config(num_classes)
        chosen = source_half_indices(len(source), config.half)[: config.max_pairs]
        if not chosen:
            raise InputError(config.source, f"at least 2 pairs (the {config.half} half is empty)", str(len(source)))
        images, masks = load_pairs(source, model_config.resolution, indices=chosen)
        self.training_images = [str(source.pairs[i].image.resolve()) for i in chosen]
        if target is not None:
            count = len(target) if config.max_pairs is None else min(config.max_pairs, len(target))
            target_images, target_masks = load_pairs(target, model_config.resolution, indices=range(count))
            images, masks = torch.cat([images, target_images]), torch.cat([masks, target_masks])
            self.training_images += [str(pair.image.resolve()) for pair in target.pairs[:count]]
        self.images, self.masks = images, masks
        self.source_count = len(chosen)
        self.model = Segmenter(model_config).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.photometric = photometric_transform(config.seed) if config.use_photometric else None

    def _step(self) -> dict[str, float]:
        index = torch.randint(0, self.images.shape[0], (self.config.batch_size,))
        images, masks = self.images[index], self.masks[index]
        started = time.perf_counter()
        if self.config.flip_augment:
            images, masks = random_flips(images, masks)
        if self.photometric is not None:
            images = augment_photometric(self.photometric, images)
        self.timer.add("augment", time.perf_counter() - started)
        started = time.perf_counter()
        loss, _ = self._dice_ce(images, masks)
        loss.backward()
        self.timer.add("train", time.perf_counter() - started)
        return {"loss": loss.item()}

    def _dice_ce(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Dice + CE loss (fp32) and the fp32 logits of a forward under the run's autocast."""
        with autocast(self.device, self.config.precision):
            logits = self.model(images.to(self.device))
        logits = logits.float()
        return self.loss(logits, masks.to(self.device).unsqueeze(1)), logits

    def _write_preview(self, step: int) -> None:
        """Rows: images, ground truth, prediction, for the first training pairs."""
        images, masks = self.images[:PREVIEW_COUNT], self.masks[:PREVIEW_COUNT]
        self.model.eval()
        predicted = self.model.predict(images.to(self.device)).cpu()
        self.model.train()
        classes = self.model.config.num_classes
        rows = [images, mask_to_rgb(masks, classes), mask_to_rgb(predicted, classes)]
        grid = torch.cat([torch.cat(list(row), dim=2) for row in rows], dim=1)
        path = self.run_dir / "previews" / f"step_{step:07d}.png"
        write_image(path, to_uint8(grid))
        self.log.emit("preview", stage=self.stage, step=step, path=str(path))

    def _export(self, step: int, seconds: float) -> Path:
        config = self.config
        info = {
            "role": config.role, "kind": config.kind, "steps": step, "train_seconds": seconds,
            "source": str(config.source), "source_half": config.half, "source_pairs": self.source_count,
            "target": config.target, "pairs": int(self.images.shape[0]), "photometric": config.use_photometric,
            "training_images": self.training_images, "train_config": config.to_dict(),
        }
        return save_segmenter(self.run_dir / SEGMENTER_DIR, self.model, info)


def train_evaluator(config: EvaluatorTrainConfig, listeners: list[Listener] | None = None, resume: bool = False) -> Path:
    """Engine API: train an evaluator or reward segmenter; returns its folder ``RUN/segmenter``."""
    return EvaluatorTrainer(config, listeners, resume).run()
