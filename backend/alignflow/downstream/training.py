"""Training of the downstream UNet / SegFormer on real and synthetic pairs, on the engine's shared loop:

    OUT/config.json, events.jsonl, checkpoints/, previews/, summary.json   as every training run
    OUT/model/   model.safetensors + segmenter.json (network config; provenance: steps, pairs, seconds)

Every batch is composed by :func:`draw_batch` from the real and the synthetic pool (``synthetic_share``); the first
``pretrain_synthetic_steps`` steps draw synthetic pairs only. Batches, flips and the initial weights all come from
torch's global generator, seeded once and saved in every checkpoint, so a seed gives the same run on the CPU, resumed
or not.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignflow.data import random_flips
from alignflow.device import autocast
from alignflow.downstream.config import DownstreamConfig
from alignflow.downstream.feedback import GenerativeFeedback
from alignflow.downstream.models import MODEL_DIR, build_model, save_model
from alignflow.fidelity.training import EvaluatorTrainer
from alignflow.runs.events import Listener
from alignflow.runs.loop import TrainingRun, seed_everything


@dataclass
class TrainingPairs:
    """Images [N, 3, R, R] in [0, 1] and class ids [N, R, R] of the real and the synthetic pool (possibly empty)."""

    real_images: torch.Tensor
    real_masks: torch.Tensor
    synthetic_images: torch.Tensor
    synthetic_masks: torch.Tensor
    num_classes: int


def draw_batch(real_count: int, synthetic_count: int, batch_size: int, share: float | None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into the real and into the synthetic pool for one batch of ``batch_size``.

    ``share`` None: uniform over the union of both pools. ``share`` s in [0, 1]: floor(s B) synthetic pairs, plus one
    more with probability frac(s B), so the synthetic fraction is exactly s in expectation and within one pair of it
    in every batch; the rest are real. Pairs are drawn with replacement within each pool.
    """
    if synthetic_count == 0:
        share = 0.0
    if share is None:
        union = torch.randint(0, real_count + synthetic_count, (batch_size,), generator=generator)
        return union[union < real_count], union[union >= real_count] - real_count
    expected = share * batch_size
    synthetic = math.floor(expected) + int(torch.rand((), generator=generator) < expected - math.floor(expected))
    real_index = torch.randint(0, max(real_count, 1), (batch_size - synthetic,), generator=generator)
    synthetic_index = torch.randint(0, max(synthetic_count, 1), (synthetic,), generator=generator)
    return real_index, synthetic_index


@dataclass
class RunSettings:
    """What the shared loop reads, from a DownstreamConfig: the whole schedule (pre-training + mix) is one run."""

    downstream: DownstreamConfig

    def __getattr__(self, name: str) -> Any:  # out, batch_size, device, checkpoint_every, preview_every, log_every
        return getattr(self.downstream, name)

    @property
    def steps(self) -> int:
        return self.downstream.total_steps

    def validate(self) -> None:
        self.downstream.validate()

    def to_dict(self) -> dict[str, Any]:
        return self.downstream.to_dict()


class DownstreamTrainer(TrainingRun):
    """Dice + cross-entropy (MONAI ``DiceCELoss``, as the evaluator) with random flips and AdamW."""

    config: RunSettings
    stage = "downstream"
    result_folder = MODEL_DIR
    # The evaluator's preview (rows: image, ground truth, prediction of the first training pairs) and loss step fit as
    # they are.
    _write_preview = EvaluatorTrainer._write_preview
    _dice_ce = EvaluatorTrainer._dice_ce

    def __init__(self, config: DownstreamConfig, pairs: TrainingPairs, listeners: list[Listener] | None = None, resume: bool = False):
        super().__init__(RunSettings(config), listeners, resume)
        autocast(self.device, config.precision)
        self.pairs = pairs
        self.completed = 0

    def _prepare(self) -> None:
        from monai.losses import DiceCELoss

        config = self.config.downstream
        seed_everything(config.seed)
        self.images, self.masks = self.pairs.real_images, self.pairs.real_masks  # what the preview shows
        self.model = build_model(config.model, self.pairs.num_classes, config.resolution, config.model_options).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.feedback = self._feedback(config) if config.feedback else None

    def _feedback(self, config: DownstreamConfig) -> GenerativeFeedback:
        from alignflow.generator.sampling import load_generator

        feedback = GenerativeFeedback(load_generator(Path(config.feedback_generator), self.device), config.feedback_temperature)
        feedback.check_compatible(config.resolution, self.pairs.num_classes, "--feedback-generator")
        return feedback

    def _maybe_resume(self) -> tuple[int, float]:
        step, seconds = super()._maybe_resume()
        self.completed = step
        return step, seconds

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """A flipped batch and how many of its pairs are synthetic."""
        config, pairs = self.config.downstream, self.pairs
        share = 1.0 if self.completed <= config.pretrain_synthetic_steps else config.synthetic_share
        real, synthetic = draw_batch(len(pairs.real_images), len(pairs.synthetic_images), config.batch_size, share)
        images = torch.cat([pairs.real_images[real], pairs.synthetic_images[synthetic]])
        masks = torch.cat([pairs.real_masks[real], pairs.synthetic_masks[synthetic]])
        return *random_flips(images, masks), len(synthetic)

    def _step(self) -> dict[str, float]:
        self.completed += 1
        started = time.perf_counter()
        images, masks, synthetic = self._batch()
        self.timer.add("batch", time.perf_counter() - started)
        started = time.perf_counter()
        loss, logits = self._dice_ce(images, masks)
        terms = {"loss_segmentation": loss.item()}
        if self.feedback is not None:  # free-lunch Eq. 11 with the generator's judgement of these logits (Eq. 10)
            rows = slice(0, self.config.feedback_batch_size)  # None: the whole batch
            with autocast(self.device, self.config.precision):
                feedback = self.feedback(images[rows].to(self.device), logits[rows])
            loss = loss + self.config.w_feedback * feedback
            terms["loss_feedback"] = feedback.item()
        loss.backward()
        self.timer.add("train", time.perf_counter() - started)
        return {"loss": loss.item(), **terms, "synthetic_fraction": synthetic / len(images)}

    def _export(self, step: int, seconds: float) -> Path:
        config, pairs = self.config.downstream, self.pairs
        info = {"steps": step, "train_seconds": seconds, "train": config.train, "synthetic": config.synthetic,
                "real_pairs": len(pairs.real_images), "synthetic_pairs": len(pairs.synthetic_images),
                "synthetic_share": config.synthetic_share, "pretrain_synthetic_steps": config.pretrain_synthetic_steps,
                "downstream_config": config.to_dict()}
        return save_model(self.run_dir / MODEL_DIR, config.model, self.model, info)
