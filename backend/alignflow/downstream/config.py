"""Configuration of a downstream evaluation: which segmenter, trained on which real (+ synthetic) pairs, scored on
which test sets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignflow.config import DictConfig
from alignflow.device import autocast
from alignflow.errors import InputError

MODELS = ("unet", "segformer", "medflowseg")
# Learning rates when ``lr`` is not given: the evaluator's for the UNet, a from-scratch transformer's for SegFormer,
# the paper's (Section 4.2) for MedFlowSeg.
DEFAULT_LR = {"unet": 1e-3, "segformer": 3e-4, "medflowseg": 1e-4}
LR_SCHEDULES = ("constant", "cosine")
SCORING_OPTIONS = ("test_time_flips",)  # options that change how a trained model is scored, not its training


def check_feedback_temperature(temperature: float) -> None:
    if not 0.0 < float(temperature) <= 1.0:
        raise InputError("--feedback-temperature", "a temperature lambda in (0, 1] (free-lunch Eq. 8)", str(temperature))


@dataclass
class DownstreamConfig(DictConfig):
    """Train ``model`` on ``train`` (+ ``synthetic``) and score it on every folder of ``test``.

    ``synthetic_share``: None draws every batch uniformly from the union of real and synthetic pairs; a fraction s
    in [0, 1) makes s of every batch synthetic (in expectation when s x batch_size is not a whole number).
    ``pretrain_synthetic_steps``: first this many steps on synthetic pairs only, then ``steps`` on the mix.
    ``synthetic`` may name several folders (say, histogram-matched pairs, translated pairs and a few labelled target
    images): each then gets an equal share of the synthetic draws, a smaller set's pairs repeated to the size of the
    largest (docs/benchmarks.md, "Pooling on the fundus shift, and labelling the references").

    The precise judge (docs/downstream.md, "Comparing arms"): ``lr_schedule`` cosine with ``warmup_steps``, an EMA
    of the weights (``ema_decay``; the EMA is what is exported and scored), ``paired_batches`` (batches and flips
    depend only on seed and step, so arms with one seed share initial weights, data order and flips, and the
    synthetic share is their only difference) and a learning curve on ``validation`` sets every ``validate_every``
    steps (results.json ``curve``), to fix the number of steps on source data, never on the target test set;
    ``test_time_flips`` averages the predicted probabilities over four flips. Only how a trained model is scored:
    a finished evaluation asked again with another ``test_time_flips`` (``SCORING_OPTIONS``) is scored again without
    training again.
    """

    config_name = "downstream config"
    validate_on_load = True

    train: str = ""  # labelled real pairs: a folder with images/ and masks/
    test: dict[str, str] = field(default_factory=dict)  # test set name -> labelled folder
    out: str = ""  # output folder: splits.json, results.json, the run and the trained model
    synthetic: str | list[str] | None = None  # synthetic pairs in the same layout (alignflow generate / export --format folders)
    synthetic_share: float | None = None
    pretrain_synthetic_steps: int = 0
    # Generative Feedback (free-lunch paper, Eq. 10-11; downstream/feedback.py): a trained generator judges the
    # segmenter's predictions; L = Dice + CE + w_feedback L_fb. Off (0) by default.
    feedback_generator: str | None = None
    w_feedback: float = 0.0
    feedback_temperature: float = 1.0
    # L_fb on the first N pairs of each batch only (None: all): the generator's forward and backward cost ~15 UNet
    # steps per batch of 16 on a CPU. Real pairs come first in a batch.
    feedback_batch_size: int | None = None
    model: str = "unet"  # "unet" (MONAI UNet), "segformer" (transformers SegFormer) or "medflowseg"
    model_options: dict[str, Any] = field(default_factory=dict)  # architecture / sampling overrides (docs/downstream.md)
    steps: int = 1500
    batch_size: int = 16
    lr: float | None = None  # None: the model's default (DEFAULT_LR)
    lr_schedule: str = "constant"  # after the warm-up: "constant" or "cosine" (decay to 0 at the last step)
    warmup_steps: int = 0  # linear warm-up from 0 to lr over the first steps
    ema_decay: float | None = None  # exponential moving average of the weights (None: off; e.g. 0.99)
    paired_batches: bool = False
    validation: dict[str, str] = field(default_factory=dict)  # learning-curve sets: name -> labelled folder
    validate_every: int = 0  # score the (EMA) model on ``validation`` every N steps (0: never)
    test_time_flips: bool = False  # predict with the mean probabilities over 4 flips (validation and test sets)
    weight_decay: float = 1e-4  # unet and segformer (MedFlowSeg keeps its own, 0)
    resolution: int = 128  # training and test images and masks are squashed to this square side
    max_pairs: int | None = None  # at most the first N pairs of train and of synthetic (quick runs)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    checkpoint_every: int = 500
    preview_every: int = 500
    log_every: int = 10

    def validate(self) -> None:
        if not self.train:
            raise InputError("--train", "a labelled dataset folder with images/ and masks/", "nothing")
        if not self.out:
            raise InputError("--out", "an output folder", "nothing")
        if not isinstance(self.test, dict) or not self.test:
            raise InputError("--test", "at least one test set NAME=FOLDER", repr(self.test) if self.test else "none")
        for name, folder in self.test.items():
            if not name or not isinstance(name, str) or "/" in name:
                raise InputError("--test", "test set names without '/' (NAME=FOLDER)", repr(name))
            for sub in ("images", "masks"):
                if not (Path(folder) / sub).is_dir():
                    raise InputError(f"--test {name}={folder}", f"a labelled dataset folder with images/ and masks/ (no {sub}/ found)")
        if self.model not in MODELS:
            raise InputError("--model", f"one of {', '.join(MODELS)}", repr(self.model))
        self._validate_synthetic_folders()
        if self.synthetic_share is not None:
            if not 0.0 <= float(self.synthetic_share) < 1.0:
                raise InputError("--synthetic-share", "a fraction in [0, 1) (or none: uniform over real + synthetic)", str(self.synthetic_share))
            if not self.synthetic:
                raise InputError("--synthetic-share", "--synthetic (a folder of synthetic pairs) to draw that share from", "no --synthetic")
        if int(self.pretrain_synthetic_steps) < 0:
            raise InputError("--pretrain-synthetic-steps", "a non-negative integer", str(self.pretrain_synthetic_steps))
        if self.pretrain_synthetic_steps and not self.synthetic:
            raise InputError("--pretrain-synthetic-steps", "--synthetic (a folder of synthetic pairs) to pre-train on", "no --synthetic")
        if self.pretrain_synthetic_steps and self.model == "medflowseg":
            raise InputError("--pretrain-synthetic-steps", "0 for --model medflowseg (the evaluation does not chain two MedFlowSeg runs; "
                             "pre-train with train-segmenter, then --init)",
                             str(self.pretrain_synthetic_steps))
        self._validate_feedback()
        for name in ("steps", "batch_size", "resolution", "log_every", "checkpoint_every", "preview_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"--{name.replace('_', '-')}", "a positive integer", repr(value))
        self._validate_judge()
        if self.max_pairs is not None and self.max_pairs < 1:
            raise InputError("--max-pairs", "a positive integer", str(self.max_pairs))
        if self.lr is not None and self.lr <= 0:
            raise InputError("--lr", "a positive learning rate", str(self.lr))
        if not isinstance(self.model_options, dict):
            raise InputError("model_options", "a mapping of option names to values", type(self.model_options).__name__)
        autocast(torch.device("cpu"), self.precision)  # rejects an unknown precision by name

    def _validate_feedback(self) -> None:
        if isinstance(self.w_feedback, bool) or not isinstance(self.w_feedback, (int, float)) or self.w_feedback < 0:
            raise InputError("--w-feedback", "a non-negative weight (0 = no Generative Feedback)", repr(self.w_feedback))
        check_feedback_temperature(self.feedback_temperature)
        if self.w_feedback > 0:
            if not self.feedback_generator:
                raise InputError("--feedback-generator", "a trained generator (run or generator folder) when --w-feedback > 0", "nothing")
            rows = self.feedback_batch_size
            if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= self.batch_size):
                raise InputError("--feedback-batch-size", f"an integer in [1, --batch-size = {self.batch_size}] (or none: all)", repr(rows))
            if self.model == "medflowseg":
                raise InputError("--w-feedback", "0 for --model medflowseg (it samples masks, it has no logits to feed back)",
                                 str(self.w_feedback))

    def _validate_judge(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError("--lr-schedule", f"one of {', '.join(LR_SCHEDULES)}", repr(self.lr_schedule))
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or not 0 <= self.warmup_steps < self.total_steps:
            raise InputError("--warmup-steps", f"an integer in [0, {self.total_steps}) (the run's steps)", repr(self.warmup_steps))
        if self.ema_decay is not None and not 0.0 < float(self.ema_decay) < 1.0:
            raise InputError("--ema-decay", "a decay in (0, 1), e.g. 0.99 (or none: no EMA)", str(self.ema_decay))
        if isinstance(self.validate_every, bool) or not isinstance(self.validate_every, int) or self.validate_every < 0:
            raise InputError("--validate-every", "a non-negative integer (0: no learning curve)", repr(self.validate_every))
        if not isinstance(self.validation, dict):
            raise InputError("--validation", "NAME=FOLDER learning-curve sets", repr(self.validation))
        if self.validate_every and not self.validation:
            raise InputError("--validate-every", "--validation (a labelled set to score the learning curve on)", "no --validation")
        for name, folder in self.validation.items():
            if not name or "/" in name or not all((Path(folder) / sub).is_dir() for sub in ("images", "masks")):
                raise InputError(f"--validation {name}={folder}", "a name without '/' and a labelled dataset folder with images/ and masks/")
        if self.paired_batches and self.synthetic and self.synthetic_share is None:
            raise InputError("--paired-batches", "--synthetic-share (paired arms differ by a fixed synthetic share of each batch)", "no --synthetic-share")
        judge = {"--lr-schedule": self.lr_schedule != "constant", "--warmup-steps": self.warmup_steps > 0,
                 "--ema-decay": self.ema_decay is not None, "--paired-batches": self.paired_batches, "--validate-every": self.validate_every > 0,
                 "--test-time-flips": self.test_time_flips}
        used = [flag for flag, on in judge.items() if on]
        if used and self.model == "medflowseg":
            raise InputError(used[0], "its default for --model medflowseg (MedFlowSeg's own trainer has its own EMA and schedule)", "set")

    def __post_init__(self) -> None:
        if isinstance(self.synthetic, list) and len(self.synthetic) == 1:
            self.synthetic = self.synthetic[0]  # one folder is stored as a string however it was given (CLI, file, API)

    def _validate_synthetic_folders(self) -> None:
        folders = self.synthetic_folders
        if self.synthetic is not None and not isinstance(self.synthetic, str) and (
                not isinstance(self.synthetic, list) or not folders or not all(isinstance(folder, str) and folder for folder in folders)):
            raise InputError("--synthetic", "one folder of synthetic pairs, or a list of folders", repr(self.synthetic))
        repeated = sorted({folder for folder in folders if folders.count(folder) > 1})
        if repeated:
            raise InputError("--synthetic", "each folder once (every folder gets an equal share of the draws)", f"{repeated[0]} twice")

    @property
    def synthetic_folders(self) -> list[str]:
        """The synthetic folders: none, the one of ``synthetic``, or its list."""
        if not self.synthetic:
            return []
        return [self.synthetic] if isinstance(self.synthetic, str) else list(self.synthetic)

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of optimisation step ``step`` (1, 2, ... total_steps): linear warm-up to ``lr`` over
        ``warmup_steps``, then ``lr`` (constant) or a half cosine from ``lr`` to 0 at the step after the last.

        A pure function of the step rather than a torch LR scheduler: nothing to checkpoint, and a resumed run gets
        exactly the rates of an uninterrupted one.
        """
        base, warmup = self.learning_rate, self.warmup_steps
        if step <= warmup:
            return base * step / warmup
        if self.lr_schedule == "constant":
            return base
        progress = (step - warmup) / (self.total_steps - warmup + 1)
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))

    @property
    def feedback(self) -> bool:
        return self.w_feedback > 0

    @property
    def learning_rate(self) -> float:
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.model]

    @property
    def total_steps(self) -> int:
        """Optimisation steps of the whole run: synthetic pre-training, then the mix."""
        return self.pretrain_synthetic_steps + self.steps
