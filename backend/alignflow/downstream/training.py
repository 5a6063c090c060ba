"""Training of the downstream UNet / SegFormer on real and synthetic pairs, on the engine's shared loop:

    OUT/config.json, events.jsonl, checkpoints/, previews/, summary.json   as every training run
    OUT/model/   model.safetensors + segmenter.json (network config; provenance: steps, pairs, seconds)

Every batch is composed by :func:`draw_batch` from the real and the synthetic pool (``synthetic_share``); the first
``pretrain_synthetic_steps`` steps draw synthetic pairs only. Batches, flips and the initial weights all come from
torch's global generator, seeded once and saved in every checkpoint, so a seed gives the same run on the CPU, resumed
or not. With ``paired_batches`` the batches and flips come from :class:`PairedBatches` instead (a function of seed
and step), so that arms trained with one seed differ only in their synthetic pairs.

The precise judge's other parts: the learning rate of every step is ``config.learning_rate_at(step)`` (warm-up,
cosine), an EMA of the weights (:class:`AveragedNetwork`) is checkpointed with the network and exported in its
place, and with ``validate_every`` the exported model's Dice on the validation sets is logged as "validation"
events (the learning curve).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alignflow.data import random_flips
from alignflow.device import autocast
from alignflow.downstream.config import DownstreamConfig
from alignflow.downstream.feedback import GenerativeFeedback
from alignflow.downstream.models import MODEL_DIR, build_model, predict_labels, save_model
from alignflow.fidelity.training import EvaluatorTrainer
from alignflow.runs.checkpoint import load_state_dict_strict
from alignflow.runs.events import Listener
from alignflow.runs.loop import TrainingRun, seed_everything

VALIDATION_EVENT = "validation"


@dataclass
class TrainingPairs:
    """Images [N, 3, R, R] in [0, 1] and class ids [N, R, R] of the real and the synthetic pool (possibly empty)."""

    real_images: torch.Tensor
    real_masks: torch.Tensor
    synthetic_images: torch.Tensor
    synthetic_masks: torch.Tensor
    num_classes: int
    validation: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None  # learning-curve sets: name -> (images, masks)


def synthetic_pairs_in_batch(share: float, batch_size: int, generator: torch.Generator | None = None) -> int:
    """floor(s B) synthetic pairs, plus one more with probability frac(s B): exactly s B in expectation."""
    expected = share * batch_size
    return math.floor(expected) + int(torch.rand((), generator=generator) < expected - math.floor(expected))


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
    synthetic = synthetic_pairs_in_batch(share, batch_size, generator)
    real_index = torch.randint(0, max(real_count, 1), (batch_size - synthetic,), generator=generator)
    synthetic_index = torch.randint(0, max(synthetic_count, 1), (synthetic,), generator=generator)
    return real_index, synthetic_index


class PairedBatches:
    """Batches that depend only on (seed, step): arms trained with one seed share their data order and flips.

    Real pairs are taken in epochs, each a permutation of the real pool seeded by (seed, epoch); step n owns the
    positions (n - 1) B ... n B - 1 of that sequence. A step with k synthetic pairs takes the first B - k of its real
    pairs and k synthetic ones drawn (with replacement) from a stream seeded by (seed, step); k itself comes from
    another such stream. So a real-only arm sees every real pair once per epoch, and an arm with a synthetic share
    sees the same real pairs in the same order, minus those its synthetic pairs replace. Flips are drawn for the B
    positions of a batch from a third stream: position j is flipped alike in every arm. Nothing here needs to be
    checkpointed: a resumed run draws exactly what an uninterrupted one draws.
    """

    REAL, COUNT, SYNTHETIC, FLIPS = range(4)

    def __init__(self, real_count: int, synthetic_count: int, batch_size: int, seed: int):
        self.real_count, self.synthetic_count, self.batch_size, self.seed = real_count, synthetic_count, batch_size, seed
        self._epochs: dict[int, torch.Tensor] = {}

    def stream(self, kind: int, index: int) -> torch.Generator:
        """An independent generator for (seed, kind, index); numpy's SeedSequence mixes the three into one seed."""
        state = np.random.SeedSequence([self.seed, kind, index]).generate_state(2, dtype=np.uint64)
        return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))

    def _epoch(self, epoch: int) -> torch.Tensor:
        if epoch not in self._epochs:
            self._epochs = {e: p for e, p in self._epochs.items() if e >= epoch - 1}  # keep the memory flat
            self._epochs[epoch] = torch.randperm(self.real_count, generator=self.stream(self.REAL, epoch))
        return self._epochs[epoch]

    def real_indices(self, step: int, count: int) -> torch.Tensor:
        """The first ``count`` real pairs of step ``step`` (1-based)."""
        positions = range((step - 1) * self.batch_size, (step - 1) * self.batch_size + count)
        return torch.tensor([int(self._epoch(p // self.real_count)[p % self.real_count]) for p in positions], dtype=torch.long)

    def draw(self, step: int, share: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices into the real and the synthetic pool for step ``step``, with a synthetic share in [0, 1]."""
        synthetic = synthetic_pairs_in_batch(share, self.batch_size, self.stream(self.COUNT, step)) if self.synthetic_count else 0
        synthetic_index = torch.randint(0, max(self.synthetic_count, 1), (synthetic,), generator=self.stream(self.SYNTHETIC, step))
        return self.real_indices(step, self.batch_size - synthetic), synthetic_index

    def flips(self, step: int) -> torch.Generator:
        return self.stream(self.FLIPS, step)


class AveragedNetwork(nn.Module):
    """The trained network and an exponential moving average of its weights, checkpointed together; the average is
    what gets validated, exported and scored. Forward and the loss go through the network itself."""

    def __init__(self, network: nn.Module, decay: float):
        from alignflow.segmentation.trainer import ema_of  # the EMA with warm-up of MedFlowSeg's trainer

        super().__init__()
        self.net = network
        self.ema = ema_of(network, decay)

    @property
    def config(self) -> Any:
        return self.net.config

    @property
    def averaged(self) -> nn.Module:
        return self.ema.module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def predict(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        return self.averaged.predict(images, batch_size)

    def update(self) -> None:
        self.ema.update_parameters(self.net)

    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def load_saved_state_dict(self, state: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
        load_state_dict_strict(self, state, where, "a downstream checkpoint with EMA weights of this run's network")


def mean_dice(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, num_classes: int, device: torch.device,
              batch_size: int = 16, test_time_flips: bool = False) -> float:
    """Mean over images of the foreground Dice (the test sets' conventions, without HD95: the curve needs only this)."""
    from alignflow.fidelity.metric import class_overlap, one_hot_maps

    was_training = model.training
    model.eval()
    predicted = predict_labels(model, images.to(device), batch_size, test_time_flips).cpu()
    model.train(was_training)
    dice, _ = class_overlap(one_hot_maps(predicted, num_classes), one_hot_maps(masks, num_classes))
    return float(dice.mean(1).mean())


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
        network = build_model(config.model, self.pairs.num_classes, config.resolution, config.model_options).to(self.device)
        self.model = AveragedNetwork(network, config.ema_decay).to(self.device) if config.ema_decay else network
        self.optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        # The loop calls optimizer.step() itself; the EMA and the learning curve follow each step through this hook.
        self.optimizer.register_step_post_hook(lambda *_: self._after_step())
        self.paired = (PairedBatches(len(self.pairs.real_images), len(self.pairs.synthetic_images), config.batch_size, config.seed)
                       if config.paired_batches else None)
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

    def _exported_network(self) -> nn.Module:
        """The network that is validated, exported and scored: the EMA when there is one."""
        return self.model.averaged if isinstance(self.model, AveragedNetwork) else self.model

    def _after_step(self) -> None:
        if isinstance(self.model, AveragedNetwork):
            self.model.update()
        config = self.config.downstream
        if config.validate_every and self.completed % config.validate_every == 0:
            self._validate()

    def _validate(self) -> None:
        """One point of the learning curve: the exported network's mean Dice on every validation set."""
        started = time.perf_counter()
        dice = {name: mean_dice(self._exported_network(), images, masks, self.pairs.num_classes, self.device, self.config.batch_size,
                                self.config.test_time_flips)
                for name, (images, masks) in (self.pairs.validation or {}).items()}
        self.timer.add("validation", time.perf_counter() - started)
        self.log.emit(VALIDATION_EVENT, stage=self.stage, step=self.completed, dice=dice)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """A flipped batch and how many of its pairs are synthetic."""
        config, pairs = self.config.downstream, self.pairs
        pretraining = self.completed <= config.pretrain_synthetic_steps
        if self.paired is not None:
            real, synthetic = self.paired.draw(self.completed, 1.0 if pretraining else config.synthetic_share or 0.0)
            flips = self.paired.flips(self.completed)
        else:
            share = 1.0 if pretraining else config.synthetic_share
            real, synthetic = draw_batch(len(pairs.real_images), len(pairs.synthetic_images), config.batch_size, share)
            flips = None
        images = torch.cat([pairs.real_images[real], pairs.synthetic_images[synthetic]])
        masks = torch.cat([pairs.real_masks[real], pairs.synthetic_masks[synthetic]])
        return *random_flips(images, masks, flips), len(synthetic)

    def _step(self) -> dict[str, float]:
        self.completed += 1
        config = self.config.downstream
        for group in self.optimizer.param_groups:
            group["lr"] = config.learning_rate_at(self.completed)
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
        return {"loss": loss.item(), **terms, "synthetic_fraction": synthetic / len(images), "lr": self.optimizer.param_groups[0]["lr"]}

    def _export(self, step: int, seconds: float) -> Path:
        config, pairs = self.config.downstream, self.pairs
        info = {"steps": step, "train_seconds": seconds, "train": config.train, "synthetic": config.synthetic,
                "real_pairs": len(pairs.real_images), "synthetic_pairs": len(pairs.synthetic_images),
                "synthetic_share": config.synthetic_share, "pretrain_synthetic_steps": config.pretrain_synthetic_steps,
                "downstream_config": config.to_dict()}
        return save_model(self.run_dir / MODEL_DIR, config.model, self._exported_network(), info)
