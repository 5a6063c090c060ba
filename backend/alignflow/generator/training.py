"""Training runs: stage 1 (denoising loss, Eq. 1) and stage 2 (denoising + alignment loss, Eq. 3), Algorithm 1.

A run writes everything to its run folder: ``config.json``, ``events.jsonl``, ``latents.safetensors`` (the encoded
dataset, so a resumed run skips encoding), ``checkpoints/`` (resumable) and ``generator/`` (the result).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from alignflow.atomic import atomic_write_json
from alignflow.data import FLIPS, SegmentationFolder, all_flips, flipped, load_pairs, load_reference_images, scan_dataset, select_references
from alignflow.device import autocast
from alignflow.errors import InputError
from alignflow.flow_matching import denoising_loss, euler_sample, frozen_euler, interpolate, tunable_jump
from alignflow.generator import latent_cache
from alignflow.generator.alignment_regularization import denoising_with_alignment_regularization
from alignflow.generator.config import TrainConfig
from alignflow.generator.factory import build_generator
from alignflow.generator.latent_codec import LatentCodec, build_codec
from alignflow.generator.model import AlignFlowGenerator, GeneratorConfig
from alignflow.generator.sampling import noised_source, translation_start_step
from alignflow.models.autoencoder import channel_statistics
from alignflow.rewards import AlignmentReward
from alignflow.runs.checkpoint import load_tensors, read_generator_folder, save_generator, save_tensors
from alignflow.runs.events import EventLog, Listener
from alignflow.runs.loop import TrainingRun, seed_everything

LATENTS_FILE = "latents.safetensors"
ENCODE_BATCH = 32
PREVIEW_COUNT = 4
PREVIEW_STEPS = 12


@dataclass
class EncodedDataset:
    """The source dataset in (raw, un-normalised) latent space, plus a few masks kept for previews."""

    image_latents: torch.Tensor
    mask_latents: torch.Tensor
    preview_masks: torch.Tensor
    stems: list[str]


def _cached_latents(stems: list[str], resolution: int, run_dirs: list[Path]) -> EncodedDataset | None:
    """The encoded dataset of this run (resume) or of the run it starts from (stage 2 after stage 1), if it matches."""
    for run_dir in run_dirs:
        meta_path = run_dir / "latents.json"
        if (run_dir / LATENTS_FILE).exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("stems") == stems and meta.get("resolution") == resolution:
                tensors = load_tensors(run_dir / LATENTS_FILE)
                return EncodedDataset(tensors["images"], tensors["masks"], tensors["preview_masks"].long(), stems)
    return None


def _encode_dataset(
    config: TrainConfig, folder: SegmentationFolder, codec: LatentCodec, resolution: int, run_dir: Path, log: EventLog
) -> EncodedDataset:
    pairs = folder.pairs[: config.max_pairs] if config.max_pairs else folder.pairs
    flips = FLIPS if config.flip_augment else FLIPS[:1]
    stems = [f"{pair.stem}:{name}" if name else pair.stem for name, _ in flips for pair in pairs]
    cached = _cached_latents(stems, resolution, [run_dir] + ([Path(config.init), Path(config.init).parent] if config.init else []))
    if cached is not None:
        return cached
    # Across runs: the same files at the same settings were encoded before (generator/latent_cache.py).
    autoencoder = codec.autoencoder  # TAEF2 (weights pinned by sha256) or a pretrained SD3 VAE (named by its path)
    codec_settings = {"autoencoder": type(autoencoder).__name__, "num_classes": codec.num_classes,
                      "weights": getattr(getattr(autoencoder, "config", None), "_name_or_path", None),
                      **({"flips": [name for name, _ in flips]} if config.flip_augment else {})}
    key = latent_cache.cache_key(pairs, resolution, codec_settings)
    stored = latent_cache.load_cached(key)
    if stored is not None and len(stored["images"]) == len(stems):
        encoded = EncodedDataset(stored["images"], stored["masks"], stored["preview_masks"].long(), stems)
        log.emit("progress", stage="encode", step=len(pairs), total=len(pairs), elapsed=0.0, cached=True)
        _keep_in_run(encoded, run_dir, stems, resolution, folder.num_classes)
        return encoded
    device = codec.latent_mean.device
    # Flipped copies are encoded from flipped pixels: the autoencoder is not flip-equivariant, so flipping latents
    # would train on latents it never produces. Rows are flip-major: every pair, then every pair flipped, ...
    image_latents: list[list[torch.Tensor]] = [[] for _ in flips]
    mask_latents: list[list[torch.Tensor]] = [[] for _ in flips]
    started = time.perf_counter()
    for start in range(0, len(pairs), ENCODE_BATCH):
        indices = list(range(start, min(start + ENCODE_BATCH, len(pairs))))
        images, masks = load_pairs(folder, resolution, indices=indices)
        with torch.no_grad():
            for row, (_, dims) in enumerate(flips):
                image_latents[row].append(codec.raw_image_latents(flipped(images, dims).to(device)).cpu())
                mask_latents[row].append(codec.raw_mask_latents(flipped(masks, dims).to(device)).cpu())
        if start == 0:
            preview_masks = masks[:PREVIEW_COUNT].clone()
        log.emit("progress", stage="encode", step=indices[-1] + 1, total=len(pairs), elapsed=time.perf_counter() - started)
    encoded = EncodedDataset(torch.cat([torch.cat(rows) for rows in image_latents]),
                             torch.cat([torch.cat(rows) for rows in mask_latents]), preview_masks, stems)
    _keep_in_run(encoded, run_dir, stems, resolution, folder.num_classes)
    latent_cache.store(key, _latent_tensors(encoded), {"stems": stems, "resolution": resolution, "source": str(config.source),
                                                       "codec": codec_settings, "seconds": time.perf_counter() - started})
    return encoded


def _latent_tensors(encoded: EncodedDataset) -> dict[str, torch.Tensor]:
    return {"images": encoded.image_latents, "masks": encoded.mask_latents, "preview_masks": encoded.preview_masks}


def _keep_in_run(encoded: EncodedDataset, run_dir: Path, stems: list[str], resolution: int, num_classes: int) -> None:
    """The run's own copy: a resumed run, and stage 2 started from this run, read it without the shared cache."""
    save_tensors(_latent_tensors(encoded), run_dir / LATENTS_FILE)
    atomic_write_json(run_dir / "latents.json", {"stems": stems, "resolution": resolution, "num_classes": num_classes})


def _generator_for_run(config: TrainConfig, num_classes: int, device: torch.device) -> tuple[AlignFlowGenerator, dict[str, Any]]:
    """Stage 1 builds a fresh generator (or continues ``init``); stage 2 always starts from ``init``.

    With Alignment Regularization (``w_ar`` > 0) a generator without a mask head gets one, copied from its image head.
    """
    model, info = _built_or_loaded_generator(config, num_classes, device)
    if config.w_ar > 0:
        model.add_mask_head()
    return model, info


def _built_or_loaded_generator(config: TrainConfig, num_classes: int, device: torch.device) -> tuple[AlignFlowGenerator, dict[str, Any]]:
    if config.init:
        values, weights, info = read_generator_folder(Path(config.init))
        generator_config = GeneratorConfig.from_dict(values)
        if generator_config.num_classes != num_classes:
            raise InputError(config.source, f"masks with {generator_config.num_classes} classes like the generator in {config.init}", f"{num_classes}")
        model = build_generator(generator_config)
        model.load_saved_state_dict(weights, str(config.init))
        return model.to(device), info
    generator_config = GeneratorConfig.from_dict({**config.generator, "num_classes": num_classes})
    return build_generator(generator_config).to(device), {}


def denoising_loss_on_rows(model: AlignFlowGenerator, x1: torch.Tensor, mask_latents: torch.Tensor, rows: slice, *,
                           cond_dropout: float) -> torch.Tensor:
    """Eq. 1 on ``rows`` of a global batch ``x1``, for one of several processes that share it.

    Noise, time and condition dropout are drawn for the whole global batch, in the order ``denoising_loss`` draws
    them, from the generator state every process shares; each process evaluates the model on its rows only. So the
    processes' rows together are exactly the one-process batch, and the mean of their losses (and gradients) is its
    loss (and gradient) up to float rounding (tests/backend/training/test_distributed.py compares both).
    """
    eps = torch.randn(x1.shape, device=x1.device, dtype=x1.dtype)
    t = torch.rand(x1.shape[0], device=x1.device, dtype=x1.dtype)
    keep = torch.rand(x1.shape[0], device=x1.device) >= cond_dropout
    x1, eps, t, keep, mask_latents = x1[rows], eps[rows], t[rows], keep[rows], mask_latents[rows]
    prediction = model.velocity(interpolate(x1, eps, t), t, mask_latents, keep)
    return F.mse_loss(prediction.float(), (x1 - eps).float())


@dataclass
class AlignmentStep:
    """One partially tunable inference of stage 2 and its reward (Algorithm 1, lines 9-20)."""

    loss: torch.Tensor
    k: int  # the tunable step: x_s at s = k / num_align_steps
    images: torch.Tensor  # the decoded one-step estimates x0_hat (on the graph)
    index: torch.Tensor  # the pairs whose masks (and, in translation mode, latents) were used
    x_s: torch.Tensor  # where the frozen steps stopped (no graph)
    start_step: int  # where the frozen steps started: 0 (noise) or k0 of the translation strength


def _load_references(config: TrainConfig, resolution: int) -> tuple[torch.Tensor, list[str]]:
    source = config.references
    if isinstance(source, list) and len(source) == 1:
        source = source[0]
    paths = select_references(Path(source) if isinstance(source, str) else [Path(p) for p in source], config.num_references, config.seed)
    return load_reference_images(paths, resolution), [str(p) for p in paths]


class Trainer(TrainingRun):
    """One run of Algorithm 1 (stage 1 or 2). ``run()`` trains to ``config.steps`` and exports the generator."""

    config: TrainConfig
    multi_process = True  # stage 1 without Alignment Regularization (checked in __init__)

    def __init__(self, config: TrainConfig, listeners: list[Listener] | None = None, resume: bool = False):
        super().__init__(config, listeners, resume)
        self.stage = config.stage
        if self.processes.distributed and (config.stage == 2 or config.w_ar > 0):
            # Stage 2's MMD compares a batch of generated images with the references as a whole: split over processes it
            # would be a different (noisier) estimate, not the one-process loss; the AR term draws its own noise.
            raise InputError("stage" if config.stage == 2 else "w_ar", "stage-1 training without Alignment Regularization when "
                             f"running in several processes (got {self.processes.count}); run this one in one process",
                             str(config.stage) if config.stage == 2 else str(config.w_ar))

    # ----------------------------------------------------------------- set-up
    def _prepare(self) -> None:
        config = self.config
        if not Path(config.source).is_dir():
            raise InputError(config.source, "a dataset folder with images/ and masks/")
        seed_everything(config.seed)
        folder = scan_dataset(Path(config.source))
        self.folder = folder
        self.model, self.init_info = _generator_for_run(config, folder.num_classes, self.device)
        gconfig = self.model.config
        self.codec = build_codec(gconfig, self.device)
        with self.processes.main_first():  # several processes: the main one encodes, the others read its cache
            self.data = _encode_dataset(config, folder, self.codec, gconfig.resolution, self.run_dir, self.log)
        if config.stage == 1 and not config.init and gconfig.kind == "compact":
            # Fix the latent normalisation from the training set before the first step (see GeneratorConfig).
            gconfig.latent_mean, gconfig.latent_std = channel_statistics(self.data.image_latents)
            gconfig.mask_latent_mean, gconfig.mask_latent_std = channel_statistics(self.data.mask_latents)
            self.codec = build_codec(gconfig, self.device, autoencoder=self.codec.autoencoder)
        self.image_latents = self.codec.normalise_images(self.data.image_latents.to(self.device))
        self.mask_latents = self.codec.normalise_masks(self.data.mask_latents.to(self.device))
        self.preview_mask_latents = None
        self.optimizer = torch.optim.AdamW(
            self.model.tunable_parameters(config.trainable), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.reward = None
        self.mask_reward = None
        self.references_used: list[str] = []
        if config.stage == 2:
            self._prepare_alignment()

    def _prepare_alignment(self) -> None:
        from alignflow.models.feature_encoders import build_feature_encoder

        config = self.config
        references, self.references_used = _load_references(config, self.model.config.resolution)
        if len(self.references_used) == 1:
            self.log.emit("warning", message="Only one reference image: alignment is unreliable with a single reference (paper Table 4); use 5-10.")
        encoder = build_feature_encoder(config.feature_encoder, device=self.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the single-reference warning is already an event
            self.reward = AlignmentReward(encoder, references.to(self.device), kind=config.reward)
        # v_theta*: by default the current weights, run without gradients (Algorithm 1 freezes them for the k
        # no-grad steps only); "snapshot" keeps the weights from the start of stage 2 for those steps instead.
        self.frozen = self.model
        # Translation mode starts the frozen steps at k0 from the noised real latents; 0 = from noise (Algorithm 1).
        self.translation_start = 0
        if config.translation_strength is not None:
            self.translation_start = translation_start_step(config.translation_strength, config.num_align_steps)
        if config.frozen_model == "snapshot":
            # Rebuilt from the stage-1 weights (not copied from the current ones), so a resumed run keeps the same v_theta*.
            snapshot, _ = _generator_for_run(config, self.model.config.num_classes, self.device)
            self.frozen = snapshot.requires_grad_(False).eval()
        if config.w_mask > 0:
            self._prepare_mask_reward()

    def _prepare_mask_reward(self) -> None:
        """L_M's frozen segmenter and the class-id masks of the training pairs (the targets of each step's masks)."""
        from alignflow.data import load_masks
        from alignflow.fidelity.mask_consistency import MaskConsistencyReward
        from alignflow.fidelity.segmenter import load_segmenter

        segmenter = load_segmenter(self.config.mask_segmenter, self.device)
        if segmenter.config.num_classes != self.model.config.num_classes:
            raise InputError(self.config.mask_segmenter, f"a segmenter of {self.model.config.num_classes} classes like the generator",
                             str(segmenter.config.num_classes))
        self.mask_reward = MaskConsistencyReward(segmenter.model)
        by_stem = {pair.stem: pair.mask for pair in self.folder.pairs}
        unflipped = self.data.stems[: len(self.data.stems) // (len(FLIPS) if self.config.flip_augment else 1)]
        masks = load_masks([by_stem[stem] for stem in unflipped], self.model.config.resolution)
        if self.config.flip_augment:
            masks = all_flips(masks)  # the same flip-major rows as the latents
        self.mask_ids = masks.to(torch.uint8).to(self.device)  # uint8: 16 kB per mask at 128 px

    # ----------------------------------------------------------------- steps
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, self.image_latents.shape[0], (self.config.batch_size,))
        return self.image_latents[index], self.mask_latents[index]

    def _stage1_step(self) -> dict[str, float]:
        x1, masks = self._batch()
        if self.config.w_ar > 0:
            return self._denoising_with_ar_step(x1, masks)
        started = time.perf_counter()
        with autocast(self.device, self.config.precision):
            if self.processes.distributed:
                loss = denoising_loss_on_rows(self.model, x1, masks, self.rows, cond_dropout=self.config.cond_dropout)
            else:
                loss = denoising_loss(self.model, x1, masks, cond_dropout=self.config.cond_dropout)
        loss.backward()
        self.timer.add("denoising", time.perf_counter() - started)
        return {"loss": loss.item(), "loss_denoising": loss.item()}

    def _denoising_with_ar_step(self, x1: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
        """L_D + w_ar L_AR (free-lunch Eq. 5), both from one draw of noise and time."""
        with autocast(self.device, self.config.precision):
            denoising, regularization = denoising_with_alignment_regularization(
                self.model, x1, masks, cond_dropout=self.config.cond_dropout, timer=self.timer)
        started = time.perf_counter()
        loss = denoising + self.config.w_ar * regularization
        loss.backward()
        self.timer.add("denoising_ar_backward", time.perf_counter() - started)
        return {"loss": loss.item(), "loss_denoising": denoising.item(), "loss_ar": regularization.item()}

    def _alignment_loss(self) -> AlignmentStep:
        """Algorithm 1 lines 9-20: partially tunable inference, decode, features, MMD (or SKL).

        In translation mode (``translation_strength``) the frozen steps start at k0 from the chosen pairs' own
        latents noised by Eq. 2 instead of at 0 from noise; the graded step is the same one model call either way.
        """
        config = self.config
        index = torch.randint(0, self.mask_latents.shape[0], (config.align_batch_size,))
        masks = self.mask_latents[index]
        start_step = self.translation_start
        k = int(torch.randint(max(config.t_is, start_step), config.num_align_steps, (1,)))
        noise = torch.randn(masks.shape[0], *self.image_latents.shape[1:], device=self.device)
        started = time.perf_counter()
        with autocast(self.device, config.precision):
            if start_step > 0:
                noise = noised_source(self.image_latents[index], noise, start_step, config.num_align_steps)
            x_s = frozen_euler(self.frozen, noise, masks, k, num_steps=config.num_align_steps, start_step=start_step)
        self.timer.add("align_nograd_steps", time.perf_counter() - started)
        started = time.perf_counter()
        with autocast(self.device, config.precision):
            x0_hat = tunable_jump(self.model, x_s, k / config.num_align_steps, masks)
        self.timer.add("align_graded_step", time.perf_counter() - started)
        started = time.perf_counter()
        with autocast(self.device, config.precision):
            images = self.codec.decode(x0_hat.float())
        self.timer.add("align_decode", time.perf_counter() - started)
        started = time.perf_counter()
        with autocast(self.device, config.precision):
            loss = self.reward(images.float())
        self.timer.add("align_features", time.perf_counter() - started)
        return AlignmentStep(loss, k, images, index, x_s, start_step)

    def _step(self) -> dict[str, float]:
        return self._stage1_step() if self.config.stage == 1 else self._stage2_step()

    def _stage2_step(self) -> dict[str, float]:
        terms = self._stage1_step()
        step = self._alignment_loss()
        alignment, k, images, index = step.loss, step.k, step.images, step.index
        loss = self.config.w_align * alignment
        if self.mask_reward is not None:
            # L_M on the same decoded one-step estimate: no extra sampling, the gradient passes the graded step only.
            started = time.perf_counter()
            with autocast(self.device, self.config.precision):
                mask_loss = self.mask_reward(images.float(), self.mask_ids[index].long())
            self.timer.add("mask_reward", time.perf_counter() - started)
            loss = loss + self.config.w_mask * mask_loss
            terms["loss_mask"] = mask_loss.item()
        started = time.perf_counter()
        loss.backward()
        self.timer.add("align_backward", time.perf_counter() - started)
        return {**terms, "loss": terms["loss"] + loss.item(), "loss_align": alignment.item(), "k": k}

    # ----------------------------------------------------------------- outputs
    def _write_preview(self, step: int) -> None:
        from alignflow.data import mask_to_rgb, to_uint8, write_image

        masks = self.data.preview_masks.to(self.device)
        mask_latents = self.codec.encode_masks(masks) if self.preview_mask_latents is None else self.preview_mask_latents
        self.preview_mask_latents = mask_latents
        generator = torch.Generator(device="cpu").manual_seed(1234)
        noise = torch.randn(masks.shape[0], *self.image_latents.shape[1:], generator=generator).to(self.device)
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.config.precision):
            latents = euler_sample(self.model, noise, mask_latents, num_steps=PREVIEW_STEPS, guidance_scale=2.0)
            images = self.codec.decode(latents.float()).float().cpu()
        self.model.train()
        overlay = torch.cat([mask_to_rgb(masks.cpu(), self.model.config.num_classes), images], dim=2)  # masks above images
        grid = torch.cat(list(overlay), dim=2)
        path = self.run_dir / "previews" / f"step_{step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, to_uint8(grid))
        self.log.emit("preview", stage=self.config.stage, step=step, path=str(path))

    def _export(self, step: int, seconds: float) -> Path:
        info = {
            "stage": self.config.stage,
            "steps": step,
            "source": str(self.config.source),
            "references": self.references_used,
            "init": self.config.init,
            "alignment_regularization": self.config.w_ar or None,
            "mask_segmenter": self.config.mask_segmenter if self.config.stage == 2 and self.config.w_mask > 0 else None,
            "translation_strength": self.config.translation_strength if self.config.stage == 2 else None,
            "train_seconds": seconds + float(self.init_info.get("train_seconds", 0.0)) if self.config.init else seconds,
            "history": [*self.init_info.get("history", []), {"stage": self.config.stage, "steps": step, "seconds": seconds}],
        }
        return save_generator(self.run_dir / "generator", self.model, self.model.config.to_dict(), info)

def train(config: TrainConfig, listeners: list[Listener] | None = None, resume: bool = False) -> Path:
    """Engine API: run stage 1 or stage 2 as configured; returns the exported generator folder."""
    return Trainer(config, listeners, resume).run()
