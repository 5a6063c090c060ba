"""Generation: Euler sampling with classifier-free guidance from any mask, batched, seeded and reproducible."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignflow.device import autocast
from alignflow.flow_matching import euler_sample, sample_noise
from alignflow.generator.factory import build_generator
from alignflow.generator.latent_codec import LatentCodec, build_codec
from alignflow.generator.model import AlignFlowGenerator, GeneratorConfig
from alignflow.progress import ProgressCallback, report_progress
from alignflow.runs.checkpoint import read_generator_folder


@dataclass
class LoadedGenerator:
    model: AlignFlowGenerator
    codec: LatentCodec
    info: dict[str, Any]
    folder: Path

    @property
    def config(self) -> GeneratorConfig:
        return self.model.config


def load_generator(folder: str | Path, device: torch.device) -> LoadedGenerator:
    """A trained generator from its folder (or a run folder), ready for sampling; weights via safetensors only."""
    values, weights, info = read_generator_folder(Path(folder))
    model = build_generator(GeneratorConfig.from_dict(values))
    model.load_saved_state_dict(weights, str(folder))
    model = model.to(device).eval().requires_grad_(False)
    return LoadedGenerator(model, build_codec(model.config, device), info, Path(folder))


@torch.no_grad()
def generate_images(
    generator: LoadedGenerator,
    masks: torch.Tensor,
    *,
    seeds: Sequence[int] | None = None,
    seed: int = 0,
    num_steps: int = 28,
    guidance_scale: float = 2.0,
    batch_size: int = 16,
    precision: str = "fp32",
    on_progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """Images [N, 3, R, R] in [0, 1] for class-id masks [N, R, R] (R = the generator's resolution).

    Sample i uses seed ``seeds[i]`` (default ``seed + i``), so any image can be regenerated alone.
    """
    config = generator.config
    device = generator.codec.latent_mean.device
    seeds = list(seeds) if seeds is not None else [seed + i for i in range(masks.shape[0])]
    latent_shape = (config.latent_channels, config.latent_size, config.latent_size)
    out = []
    for start in range(0, masks.shape[0], batch_size):
        chunk = masks[start : start + batch_size].to(device)
        noise = sample_noise(chunk.shape[0], latent_shape, seeds[start : start + batch_size]).to(device)
        with autocast(device, precision):
            mask_latents = generator.codec.encode_masks(chunk)
            latents = euler_sample(generator.model, noise, mask_latents, num_steps=num_steps, guidance_scale=guidance_scale)
            images = generator.codec.decode(latents.float())
        out.append(images.float().clamp(0, 1).cpu())
        report_progress(on_progress, "generate", min(start + batch_size, masks.shape[0]), masks.shape[0])
    return torch.cat(out)
