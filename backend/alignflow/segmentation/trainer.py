"""MedFlowSeg training runs, on the engine's shared loop (:class:`alignflow.runs.loop.TrainingRun`):

    RUN/config.json               the resolved SegmenterTrainConfig
    RUN/events.jsonl              start, progress (loss terms, images/s, ETA), preview, checkpoint, resume, error, done
    RUN/checkpoints/step_N/       model + EMA weights, AdamW state and RNG (safetensors), resumable with --resume
    RUN/previews/step_N.png       image / ground truth / one 10-step sample, for a few training pairs
    RUN/segmenter/                the result: EMA weights (model.safetensors) + segmenter.json (config, provenance)
    RUN/summary.json              steps, seconds, seconds per step, peak memory

Train from a dataset folder (``config.source``) or from tensors (``train_segmenter(config, images=..., masks=...)``),
e.g. real + synthetic pairs for a downstream evaluation.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from alignflow.data import load_pairs, mask_to_rgb, random_flips, scan_dataset, to_uint8, write_image
from alignflow.device import autocast
from alignflow.errors import InputError
from alignflow.runs.checkpoint import MODEL_FILE, load_state_dict_strict, read_model_folder, save_model_folder
from alignflow.runs.events import Listener
from alignflow.runs.loop import TrainingRun, seed_everything
from alignflow.segmentation.config import MedFlowSegConfig, SegmenterTrainConfig
from alignflow.segmentation.flow import decode_labels, euler_sample, medflowseg_loss
from alignflow.segmentation.model import MedFlowSeg

MODEL_KIND = "medflowseg"  # written into the exported folder's info
SEGMENTER_DIR = "segmenter"
SEGMENTER_CONFIG_FILE = "segmenter.json"
PREVIEW_COUNT = 4
PREVIEW_STEPS = 10


def ema_of(model: nn.Module, decay: float) -> AveragedModel:
    """Exponential moving average of the weights (Section 4.2), with the usual warm-up
    decay_n = min(decay, (1 + n) / (10 + n)) so that short runs are not dominated by the random initial weights."""

    def average(averaged: torch.Tensor, current: torch.Tensor, count: torch.Tensor | int) -> torch.Tensor:
        n = float(count)
        rate = min(decay, (1.0 + n) / (10.0 + n))
        return averaged * rate + current * (1.0 - rate)

    return AveragedModel(model, avg_fn=average)


class TrainingState(nn.Module):
    """What the loop trains and checkpoints: the model and its EMA (both restored by --resume)."""

    def __init__(self, model: MedFlowSeg, ema_decay: float):
        super().__init__()
        self.net = model
        self.ema = ema_of(model, ema_decay)

    @property
    def config(self) -> MedFlowSegConfig:
        return self.net.config

    def ema_model(self) -> MedFlowSeg:
        model = copy.deepcopy(self.net)
        model.load_state_dict(self.ema.module.state_dict())
        return model.eval()

    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def load_saved_state_dict(self, state: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
        load_state_dict_strict(self, state, where, "a MedFlowSeg checkpoint of this run's configuration")


def save_segmenter(folder: Path, model: MedFlowSeg, info: dict[str, Any]) -> Path:
    """The exported segmenter (what ``segment`` loads): weights + config + provenance, written atomically."""
    return save_model_folder(folder, model, model.config.to_dict(), {"model": MODEL_KIND, **info}, SEGMENTER_CONFIG_FILE)


class ExportedSegmenter(NamedTuple):
    model: MedFlowSeg  # on the CPU, in training mode
    info: dict[str, Any]  # provenance (steps, source, ...)
    folder: Path  # the segmenter folder it was read from


def read_segmenter(folder: Path) -> ExportedSegmenter:
    """An exported segmenter folder (or a run folder holding ``segmenter/``); weights via safetensors only."""
    values, weights, info, folder = read_model_folder(
        Path(folder), config_file=SEGMENTER_CONFIG_FILE, subfolder=SEGMENTER_DIR,
        expected=f"a trained segmenter folder (with {SEGMENTER_CONFIG_FILE} and {MODEL_FILE}) or a train-segmenter run folder")
    model = MedFlowSeg(MedFlowSegConfig.from_dict(values, where=str(folder / SEGMENTER_CONFIG_FILE)))
    model.load_saved_state_dict(weights, str(folder / MODEL_FILE))
    return ExportedSegmenter(model, info, folder)


def check_training_tensors(images: torch.Tensor | None, masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 3, R, R] float in [0, 1] and masks [N, R, R] of class ids, or an InputError naming what is wrong."""
    if images is None or masks is None:
        raise InputError("images/masks", "both images [N, 3, R, R] and masks [N, R, R] tensors", "only one of them")
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise InputError("images", "a float tensor [N, 3, R, R] in [0, 1]", f"{images.dtype} {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise InputError("images", "at least one training pair", "none")
    if masks.shape != (images.shape[0], *images.shape[2:]) or masks.is_floating_point():
        raise InputError("masks", f"an integer tensor of shape {(images.shape[0], *images.shape[2:])}", f"{masks.dtype} {tuple(masks.shape)}")
    if int(masks.min()) < 0:
        raise InputError("masks", "class ids >= 0", f"minimum {int(masks.min())}")
    return images.float(), masks.long()


class SegmenterTrainer(TrainingRun):
    """One MedFlowSeg run (Eq. 5) on a dataset folder or on given tensors."""

    config: SegmenterTrainConfig
    stage = "segmenter"
    result_folder = SEGMENTER_DIR

    def __init__(
        self,
        config: SegmenterTrainConfig,
        listeners: list[Listener] | None = None,
        resume: bool = False,
        images: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ):
        super().__init__(config, listeners, resume)
        autocast(self.device, config.precision)  # rejects an unknown precision before anything is written
        self.given = (images, masks)

    # ----------------------------------------------------------------- set-up
    def _prepare(self) -> None:
        seed_everything(self.config.seed)
        self.init = read_segmenter(Path(self.config.init)) if self.config.init else None
        self.images, self.masks, num_classes, self.source = self._load_data()
        model = self.init.model if self.init else MedFlowSeg(self.config.model_config(num_classes))
        self.model = TrainingState(model, self.config.ema_decay).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.net.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        # The loop calls optimizer.step() itself; the EMA follows every step through the optimizer's post-step hook.
        self.optimizer.register_step_post_hook(lambda *_: self.model.ema.update_parameters(self.model.net))

    def _load_data(self) -> tuple[torch.Tensor, torch.Tensor, int, str]:
        """Images [N, 3, R, R] in [0, 1], class ids [N, R, R], the number of classes and where they came from."""
        config = self.config
        if any(t is not None for t in self.given):
            images, masks = check_training_tensors(*self.given)
            num_classes = self._classes(max(2, int(masks.max()) + 1), "masks")
            resolution = self._model_config(num_classes).resolution
            if images.shape[-2:] != (resolution, resolution):
                raise InputError("images", f"tensors at the model resolution {resolution} x {resolution}", f"{tuple(images.shape[-2:])}")
            return images, masks, num_classes, "tensors"
        if not config.source:
            raise InputError("--source", "a dataset folder with images/ and masks/", "nothing")
        folder = scan_dataset(Path(config.source))
        num_classes = self._classes(folder.num_classes, config.source)
        count = len(folder) if config.max_pairs is None else min(config.max_pairs, len(folder))
        images, masks = load_pairs(folder, self._model_config(num_classes).resolution, indices=range(count))
        return images, masks, num_classes, str(config.source)

    def _model_config(self, num_classes: int) -> MedFlowSegConfig:
        """The configuration's model, or with ``init`` the initial segmenter's."""
        return self.config.model_config(num_classes) if self.init is None else self.init.model.config

    def _classes(self, seen: int, where: str) -> int:
        """The run's class count from the ``seen`` in the data: --num-classes, or with ``init`` the segmenter's."""
        wanted = self.config.num_classes
        if self.init is not None:
            classes = self.init.model.config.num_classes
            if seen > classes or wanted not in (None, classes):
                raise InputError(where, f"masks with at most {classes} classes like the segmenter in --init {self.config.init}",
                                 f"{max(seen, wanted or 0)} classes")
            return classes
        if wanted is not None and wanted < seen:
            raise InputError(where, f"class ids below num_classes={wanted}", f"{seen} classes")
        return wanted or seen

    # ----------------------------------------------------------------- steps
    def _step(self) -> dict[str, float]:
        index = torch.randint(0, self.images.shape[0], (self.config.batch_size,))
        images, masks = self.images[index], self.masks[index]
        if self.config.flip_augment:
            images, masks = random_flips(images, masks)
        started = time.perf_counter()
        with autocast(self.device, self.config.precision):
            terms = medflowseg_loss(self.model.net, images.to(self.device), masks.to(self.device),
                                    lambda_aux=self.config.lambda_aux, alpha_ce=self.config.alpha_ce)
        terms["loss"].backward()
        self.timer.add("train", time.perf_counter() - started)
        return {name: value.item() for name, value in terms.items()}

    # ----------------------------------------------------------------- outputs
    def _write_preview(self, step: int) -> None:
        """Rows: images, ground truth, one sample of the EMA model (PREVIEW_STEPS Euler steps, fixed noise)."""
        images, masks = self.images[:PREVIEW_COUNT].to(self.device), self.masks[:PREVIEW_COUNT]
        model = self.model.ema.module.eval()
        noise = torch.randn(images.shape[0], model.config.num_classes, *images.shape[-2:], generator=torch.Generator().manual_seed(1234))
        with torch.no_grad(), autocast(self.device, self.config.precision):
            labels = decode_labels(euler_sample(model, model.condition(images), noise.to(self.device), PREVIEW_STEPS).float()).cpu()
        rows = [images.cpu(), mask_to_rgb(masks, model.config.num_classes), mask_to_rgb(labels.long(), model.config.num_classes)]
        grid = torch.cat([torch.cat(list(row), dim=2) for row in rows], dim=1)
        path = self.run_dir / "previews" / f"step_{step:07d}.png"
        write_image(path, to_uint8(grid))
        self.log.emit("preview", stage=self.stage, step=step, path=str(path))

    def _export(self, step: int, seconds: float) -> Path:
        info = {"steps": step, "source": self.source, "pairs": int(self.images.shape[0]), "train_seconds": seconds,
                "train_config": self.config.to_dict()}
        if self.init is not None:
            info["init"] = {"folder": str(self.init.folder), "steps": self.init.info.get("steps"), "source": self.init.info.get("source")}
        return save_segmenter(self.run_dir / SEGMENTER_DIR, self.model.ema_model(), info)



def train_segmenter(
    config: SegmenterTrainConfig,
    listeners: list[Listener] | None = None,
    resume: bool = False,
    *,
    images: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
) -> Path:
    """Engine API: train MedFlowSeg on ``config.source`` (a dataset folder) or on ``images`` [N, 3, R, R] in [0, 1]
    and ``masks`` [N, R, R] of class ids (R = the model resolution); returns the segmenter folder ``RUN/segmenter``.

    ``config.num_classes`` fixes the class count when the data may not show every class (default: the data's).
    A resumed run given tensors must be given the same tensors again.
    """
    return SegmenterTrainer(config, listeners, resume, images=images, masks=masks).run()
