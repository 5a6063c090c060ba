"""Mask synthesis (paper Section 3.3, Figure 2(b)): generate, post-process, keep the best of K per real mask.

For each real mask, K candidates are drawn from the mask generator and post-processed (threshold, blur, opening and
closing, small components, holes; ``postprocess.py``). Degenerate candidates (nearly empty or nearly all
foreground) are rejected; of the rest, the one whose pooled features (the reward's feature encoder, applied to the
masks rendered as grey images) have the highest cosine similarity to the real mask's is kept (step 4 of
Section 3.3). The kept masks then go to the aligned image generator (``augment --synthetic-masks``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from alignflow.atomic import atomic_directory, atomic_write_json
from alignflow.config import DictConfig, section
from alignflow.data import list_images, load_masks, mask_to_rgb, scan_dataset, write_mask
from alignflow.device import autocast, resolve_device
from alignflow.errors import InputError
from alignflow.flow_matching import euler_sample, interpolate, sample_noise
from alignflow.masks.model import MaskCodec, MaskGenerator, MaskGeneratorConfig, build_mask_codec
from alignflow.masks.postprocess import PostprocessConfig, postprocess_masks
from alignflow.masks.training import MODEL_KIND
from alignflow.runs.checkpoint import read_generator_folder
from alignflow.runs.events import EventLog, Listener
from alignflow.runs.outputs import check_output_folder, mark_output


@dataclass
class LoadedMaskGenerator:
    model: MaskGenerator
    codec: MaskCodec
    info: dict[str, Any]
    folder: Path

    @property
    def config(self) -> MaskGeneratorConfig:
        return self.model.config


def load_mask_generator(folder: str | Path, device: torch.device) -> LoadedMaskGenerator:
    """A trained mask generator from its folder (or its run folder); weights via safetensors only."""
    values, weights, info = read_generator_folder(Path(folder))
    if info.get("model") != MODEL_KIND:
        raise InputError(folder, "a mask generator (trained with `alignflow train-masks`)", "an image generator" if "kind" in values else "another kind of model")
    model = MaskGenerator(MaskGeneratorConfig.from_dict(values))
    model.load_saved_state_dict(weights, str(folder))
    model = model.to(device).eval().requires_grad_(False)
    return LoadedMaskGenerator(model, build_mask_codec(model.config, device), info, Path(folder))


@torch.no_grad()
def generate_raw_masks(
    generator: LoadedMaskGenerator,
    seeds: list[int],
    *,
    num_steps: int = 28,
    init_masks: torch.Tensor | None = None,
    strength: float = 1.0,
    batch_size: int = 32,
    precision: str = "fp32",
) -> torch.Tensor:
    """Raw grey masks [N, R, R] (class c of K near c / (K - 1)), one per seed; not yet post-processed.

    ``strength`` < 1 makes variations of ``init_masks`` (class ids [N, R, R]) instead of fresh masks: each is noised
    by Eq. 2 to t = 1 - strength and integrated from there (SDEdit), so 0.3 keeps the layout, 1.0 ignores it.
    """
    if not 0.0 < strength <= 1.0:
        raise InputError("strength", "a number in (0, 1]", str(strength))
    if strength < 1.0 and (init_masks is None or init_masks.shape[0] != len(seeds)):
        raise InputError("init_masks", "one mask per seed when strength < 1", "none" if init_masks is None else str(init_masks.shape[0]))
    config = generator.config
    device = generator.codec.mean.device
    shape = (config.channels, config.sample_size, config.sample_size)
    start_step = round((1.0 - strength) * num_steps)
    out = []
    for start in range(0, len(seeds), batch_size):
        x = sample_noise(len(seeds[start : start + batch_size]), shape, seeds[start : start + batch_size]).to(device)
        with autocast(device, precision):
            if start_step > 0:
                x1 = generator.codec.encode(init_masks[start : start + batch_size].to(device))
                x = interpolate(x1, x, torch.full((x.shape[0],), start_step / num_steps, device=device))
            x = euler_sample(generator.model, x, None, num_steps=num_steps, start_step=start_step)
            out.append(generator.codec.decode(x.float()).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def mask_features(encoder: torch.nn.Module, masks: torch.Tensor, num_classes: int, batch_size: int = 64) -> torch.Tensor:
    """Global pooled features [N, D] of class-id masks, rendered as the grey images the generators see."""
    device = next(encoder.parameters()).device
    features = [encoder(mask_to_rgb(masks[i : i + batch_size], num_classes).to(device)).float().cpu() for i in range(0, masks.shape[0], batch_size)]
    return torch.cat(features)


def degenerate_masks(masks: torch.Tensor, min_foreground: float, max_foreground: float) -> torch.Tensor:
    """True where the foreground (any class > 0) covers less than ``min_foreground`` or more than ``max_foreground``."""
    foreground = (masks > 0).flatten(1).float().mean(dim=1)
    return (foreground < min_foreground) | (foreground > max_foreground)


def best_of_k(reference: torch.Tensor, candidates: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Index [N] of the candidate [N, K, D] most cosine-similar to each reference [N, D], and that similarity.

    Invalid candidates (``valid`` False) are never chosen; a reference with no valid candidate gets index -1 and
    similarity -inf.
    """
    similarity = F.cosine_similarity(candidates, reference.unsqueeze(1), dim=-1)
    if valid is not None:
        similarity = similarity.masked_fill(~valid, float("-inf"))
    best, index = similarity.max(dim=1)
    return torch.where(torch.isfinite(best), index, torch.full_like(index, -1)), best


@dataclass
class MaskSynthesisConfig(DictConfig):
    """``alignflow masks``: how many masks, K, sampling, post-processing and the degenerate-mask rule."""

    generator: str = ""  # trained mask generator (run folder or generator folder)
    masks: str = ""  # real masks to match: a dataset folder (images/ + masks/) or a folder of mask files
    out: str = ""  # output folder: masks/ + manifest.json
    num_masks: int | None = None  # one synthetic mask per real mask, for the first N real masks (default all)
    candidates: int = 8  # K
    sample_steps: int = 28
    strength: float = 1.0  # < 1: variations of each real mask instead of fresh draws (see generate_raw_masks)
    output_size: int | None = None  # side of the written masks (default: the generator's resolution)
    feature_encoder: str = "efficientnet-lite0"
    postprocess: dict[str, Any] = field(default_factory=dict, metadata=section("alignflow.masks.postprocess:PostprocessConfig"))
    min_foreground: float = 0.005
    max_foreground: float = 0.95
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    overwrite: bool = False  # replace an existing non-empty out (never one holding the real masks: runs.outputs)

    def validate(self) -> None:
        for name, what in (("generator", "a trained mask generator folder"), ("masks", "a folder of real masks"), ("out", "an output folder")):
            if not getattr(self, name):
                raise InputError(f"--{name}", what, "nothing")
        if self.candidates < 1:
            raise InputError("candidates", "K >= 1 candidates per real mask", str(self.candidates))
        if self.sample_steps < 1:
            raise InputError("sample_steps", "a positive number of Euler steps", str(self.sample_steps))
        if self.num_masks is not None and self.num_masks < 1:
            raise InputError("num_masks", "a positive number of masks", str(self.num_masks))
        if not 0.0 <= self.min_foreground < self.max_foreground <= 1.0:
            raise InputError("min_foreground/max_foreground", "0 <= min_foreground < max_foreground <= 1", f"{self.min_foreground}, {self.max_foreground}")


def real_mask_paths(folder: str | Path) -> list[Path]:
    """Mask files of a dataset folder (images/ + masks/) or of a plain folder of masks."""
    folder = Path(folder)
    if (folder / "masks").is_dir():
        return [pair.mask for pair in scan_dataset(folder).pairs]
    return list_images(folder)


def _upsampled(raw: torch.Tensor, size: int) -> torch.Tensor:
    if raw.shape[-1] == size:
        return raw
    return F.interpolate(raw.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]


def synthesize_masks(config: MaskSynthesisConfig, listeners: list[Listener] | None = None) -> dict[str, Any]:
    """Engine API of ``alignflow masks``: writes ``out/masks/*.png``, ``manifest.json``, ``report.json`` and
    ``events.jsonl``; returns the report."""
    from alignflow.models.feature_encoders import build_feature_encoder

    config.validate()
    started = time.perf_counter()
    out = Path(config.out)
    paths = real_mask_paths(config.masks)[: config.num_masks]
    if not paths:
        raise InputError(config.masks, "at least one mask file")
    check_output_folder(out, "masks", inputs=[paths, config.masks, config.generator], overwrite=config.overwrite)
    device = resolve_device(config.device)
    generator = load_mask_generator(config.generator, device)
    num_classes = generator.config.num_classes
    post = PostprocessConfig.from_dict({**config.postprocess, "num_classes": num_classes})
    size = config.output_size or generator.config.resolution
    real = load_masks(paths, size)
    if int(real.max()) >= num_classes:
        raise InputError(config.masks, f"class ids below {num_classes} (the mask generator's classes)", f"id {int(real.max())}")
    encoder = build_feature_encoder(config.feature_encoder, device=device)
    real_features = mask_features(encoder, real, num_classes)
    init = None
    if config.strength < 1.0:  # the real masks at the generator's own size, for SDEdit starts
        init = real if size == generator.config.resolution else load_masks(paths, generator.config.resolution)
    out.mkdir(parents=True, exist_ok=True)
    mark_output(out, "masks")
    log = EventLog(out, listeners)
    log.emit("start", stage="masks:generate", step=0, total=len(paths), device=str(device))
    k = config.candidates
    rows, kept_masks, rejected = [], [], 0
    for index, path in enumerate(paths):
        seeds = [config.seed + index * k + j for j in range(k)]
        raw = generate_raw_masks(
            generator, seeds, num_steps=config.sample_steps, strength=config.strength, batch_size=config.batch_size,
            init_masks=None if init is None else init[index : index + 1].expand(k, -1, -1), precision=config.precision,
        )
        candidates = torch.from_numpy(postprocess_masks(_upsampled(raw, size).numpy(), post).astype(np.int64))
        valid = ~degenerate_masks(candidates, config.min_foreground, config.max_foreground)
        rejected += int((~valid).sum())
        choice, similarity = best_of_k(real_features[index : index + 1], mask_features(encoder, candidates, num_classes).unsqueeze(0), valid.unsqueeze(0))
        chosen = int(choice[0])
        if chosen >= 0:
            kept_masks.append((f"{path.stem}_synthetic", candidates[chosen].numpy().astype(np.uint8)))
            rows.append({"stem": f"{path.stem}_synthetic", "synthetic": True, "reference_mask": str(path), "seed": seeds[chosen],
                         "candidate": chosen, "similarity": float(similarity[0]), "valid_candidates": int(valid.sum()),
                         "generator": str(generator.folder), "sample_steps": config.sample_steps, "strength": config.strength,
                         "postprocess": post.to_dict()})
        log.emit("progress", stage="masks:generate", step=index + 1, total=len(paths))
    with atomic_directory(out / "masks") as tmp:  # the previous masks/ stays until the new one is complete
        for stem, mask in kept_masks:
            write_mask(tmp / f"{stem}.png", mask, binary_as_255=num_classes == 2)
    atomic_write_json(out / "manifest.json", rows)
    report = {
        "masks": str(out / "masks"), "real_masks": len(paths), "kept": len(rows), "candidates": k,
        "rejected_candidates": rejected, "without_valid_candidate": len(paths) - len(rows),
        "mean_similarity": float(np.mean([row["similarity"] for row in rows])) if rows else None,
        "seconds": time.perf_counter() - started, "config": asdict(config),
    }
    atomic_write_json(out / "report.json", report)
    log.emit("done", stage="masks:generate", kept=len(rows), report=str(out / "report.json"))
    return report
