"""Training the mask generator: the denoising loss (Eq. 1) on the source dataset's masks alone.

A run folder like the image generator's (``config.json``, ``events.jsonl``, ``checkpoints/``, ``previews/``,
``generator/``); the loop, resuming and events come from ``training.loop``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignflow.atomic import atomic_write_json
from alignflow.config import DictConfig, section
from alignflow.data import load_masks, scan_dataset, to_uint8, write_image
from alignflow.device import autocast
from alignflow.errors import InputError
from alignflow.flow_matching import denoising_loss, euler_sample
from alignflow.masks.model import MaskCodec, MaskGenerator, MaskGeneratorConfig, build_mask_codec
from alignflow.models.autoencoder import channel_statistics
from alignflow.runs.checkpoint import load_tensors, save_generator, save_tensors
from alignflow.runs.events import Listener
from alignflow.runs.loop import TrainingRun, seed_everything

DATA_FILE = "mask_data.safetensors"
MODEL_KIND = "mask-generator"  # written into the exported folder's info, so loaders can tell the generators apart
ENCODE_BATCH = 64
PREVIEW_COUNT = 8
PREVIEW_STEPS = 20


@dataclass
class MaskTrainConfig(DictConfig):
    """Training of the mask generator on the masks of a labelled dataset (its images are not read)."""

    source: str = ""  # dataset folder with images/ and masks/
    out: str = ""  # run folder
    steps: int = 2000
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-2
    # Masks have no canonical orientation in endoscopy or fundus crops: flips quadruple the training set for free.
    flip_augment: bool = True
    max_pairs: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    checkpoint_every: int = 200
    preview_every: int = 200
    log_every: int = 10
    generator: dict[str, Any] = field(default_factory=dict, metadata=section("alignflow.masks.model:MaskGeneratorConfig"))

    fixed_on_resume = ("generator",)  # the architecture (runs.loop: a resumed run keeps it)

    def validate(self) -> None:
        if not self.source:
            raise InputError("--source", "a dataset folder with images/ and masks/", "nothing")
        if not self.out:
            raise InputError("--out", "a run folder", "nothing")
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "preview_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(name, "a positive integer", str(getattr(self, name)))
        if self.lr <= 0:
            raise InputError("lr", "a positive learning rate", str(self.lr))


def flipped_copies(masks: torch.Tensor) -> torch.Tensor:
    """The masks and their horizontal, vertical and double flips."""
    return torch.cat([masks, masks.flip(-1), masks.flip(-2), masks.flip(-1, -2)])


class MaskTrainer(TrainingRun):
    """One training run of the mask generator."""

    config: MaskTrainConfig
    stage = "masks"

    def __init__(self, config: MaskTrainConfig, listeners: list[Listener] | None = None, resume: bool = False):
        super().__init__(config, listeners, resume)

    def _prepare(self) -> None:
        config = self.config
        if not Path(config.source).is_dir():
            raise InputError(config.source, "a dataset folder with images/ and masks/")
        seed_everything(config.seed)
        folder = scan_dataset(Path(config.source))
        pairs = folder.pairs[: config.max_pairs] if config.max_pairs else folder.pairs
        # Statistics are recomputed from the same masks on resume, so they need not be restored.
        gconfig = MaskGeneratorConfig.from_dict({**config.generator, "num_classes": folder.num_classes})
        masks = load_masks([pair.mask for pair in pairs], gconfig.resolution)
        if config.flip_augment:
            masks = flipped_copies(masks)
        codec = build_mask_codec(gconfig, self.device)
        raw = self._encoded(codec, masks, [pair.stem for pair in pairs])
        if gconfig.space == "latent" and not gconfig.latent_mean:
            # Flow matching assumes data of roughly unit scale; TAEF2 latents are not (as for the image generator).
            gconfig.latent_mean, gconfig.latent_std = channel_statistics(raw)
        self.codec = MaskCodec(gconfig, codec.autoencoder).to(self.device)
        self.data = self.codec.normalise(raw.to(self.device))
        self.model = MaskGenerator(gconfig).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.source_pairs = len(pairs)

    def _encoded(self, codec: MaskCodec, masks: torch.Tensor, stems: list[str]) -> torch.Tensor:
        """The masks in data space; cached in the run folder so a resumed run skips encoding."""
        key = {"stems": stems, "flip_augment": self.config.flip_augment, **{k: v for k, v in codec.config.to_dict().items() if k in ("space", "resolution", "pixel_size")}}
        cache, meta = self.run_dir / DATA_FILE, self.run_dir / "mask_data.json"
        if cache.exists() and meta.exists() and json.loads(meta.read_text()) == key:
            return load_tensors(cache)["masks"]
        raw = self._encode(codec, masks)
        save_tensors({"masks": raw}, cache)
        atomic_write_json(meta, key)
        return raw

    def _encode(self, codec: MaskCodec, masks: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        raw = []
        for start in range(0, masks.shape[0], ENCODE_BATCH):
            with torch.no_grad():
                raw.append(codec.raw_encode(masks[start : start + ENCODE_BATCH].to(self.device)).cpu())
            done = min(start + ENCODE_BATCH, masks.shape[0])
            self.log.emit("progress", stage="encode", step=done, total=masks.shape[0], elapsed=time.perf_counter() - started)
        return torch.cat(raw)

    def _step(self) -> dict[str, float]:
        index = torch.randint(0, self.data.shape[0], (self.config.batch_size,))
        started = time.perf_counter()
        with autocast(self.device, self.config.precision):
            loss = denoising_loss(self.model, self.data[index], None)
        loss.backward()
        self.timer.add("denoising", time.perf_counter() - started)
        return {"loss": loss.item(), "loss_denoising": loss.item()}

    def _write_preview(self, step: int) -> None:
        generator = torch.Generator().manual_seed(1234)
        noise = torch.randn(PREVIEW_COUNT, *self.data.shape[1:], generator=generator).to(self.device)
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.config.precision):
            raw = self.codec.decode(euler_sample(self.model, noise, None, num_steps=PREVIEW_STEPS).float()).float().cpu()
        self.model.train()
        grid = torch.cat(list(raw.clamp(0, 1)), dim=1)  # side by side
        path = self.run_dir / "previews" / f"step_{step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, to_uint8(grid.unsqueeze(0).expand(3, -1, -1)))
        self.log.emit("preview", stage=self.stage, step=step, path=str(path))

    def _export(self, step: int, seconds: float) -> Path:
        info = {"model": MODEL_KIND, "steps": step, "source": str(self.config.source), "train_seconds": seconds,
                "training_masks": self.source_pairs}
        return save_generator(self.run_dir / "generator", self.model, self.model.config.to_dict(), info)


def train_mask_generator(config: MaskTrainConfig, listeners: list[Listener] | None = None, resume: bool = False) -> Path:
    """Engine API: train the mask generator; returns its exported folder."""
    return MaskTrainer(config, listeners, resume).run()
