"""Generation: Euler sampling with classifier-free guidance from any mask, batched, seeded and reproducible.

One code path generates from noise and translates real images (SDEdit-style image-to-image, as "Real Guidance",
He et al. ICLR 2023, starts few-shot synthesis from noised real images): the real image's latent x1 is put at time
t0 = 1 - s on the flow path, x_t0 = t0 x1 + (1 - t0) eps (Eq. 2, the same seeded eps that generation starts from),
and Eq. 14 integrates from t0 to 1 conditioned on that image's own mask. Strength s = 1 starts at the noise itself
(generation, bit for bit); s = 0 takes no step and returns the encoded-decoded source image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignflow.device import autocast
from alignflow.errors import InputError
from alignflow.flow_matching import euler_sample, interpolate, sample_noise
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


def check_strength(strength: float) -> float:
    """The translation strength s, a number in [0, 1], or a one-line error naming ``--strength``."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= float(strength) <= 1.0:
        raise InputError("--strength", "a translation strength in [0, 1] (0 keeps the source image, 1 generates from "
                         "noise)", repr(strength))
    return float(strength)


def translation_start_step(strength: float, num_steps: int) -> int:
    """The Euler step k0 that translation with strength s starts from: t0 = k0 / num_steps, the grid point nearest
    to 1 - s (the integrator's grid; the noised start and the steps after it share it). 0 for s = 1 (from noise)."""
    return round((1.0 - check_strength(strength)) * num_steps)


def noised_source(source_latents: torch.Tensor, noise: torch.Tensor, start_step: int, num_steps: int) -> torch.Tensor:
    """Eq. 2 at t0 = start_step / num_steps: where a real latent x1 sits on the flow path with noise eps."""
    t0 = torch.full((source_latents.shape[0],), start_step / num_steps, device=noise.device, dtype=noise.dtype)
    return interpolate(source_latents.to(noise.dtype), noise, t0)


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
    source_images: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Images [N, 3, R, R] in [0, 1] for class-id masks [N, R, R] (R = the generator's resolution).

    Sample i uses seed ``seeds[i]`` (default ``seed + i``), so any image can be regenerated alone. With
    ``source_images`` [N, 3, R, R] in [0, 1] (image i belongs to mask i) and ``strength`` s < 1, image i is the
    translation of source image i: it starts at t0 = 1 - s (``translation_start_step``) instead of from noise.
    """
    config = generator.config
    device = generator.codec.latent_mean.device
    start_step = translation_start_step(strength, num_steps)
    if start_step > 0:
        _check_sources(source_images, masks, config.resolution)
    seeds = list(seeds) if seeds is not None else [seed + i for i in range(masks.shape[0])]
    latent_shape = (config.latent_channels, config.latent_size, config.latent_size)
    out = []
    for start in range(0, masks.shape[0], batch_size):
        chunk = masks[start : start + batch_size].to(device)
        noise = sample_noise(chunk.shape[0], latent_shape, seeds[start : start + batch_size]).to(device)
        with autocast(device, precision):
            mask_latents = generator.codec.encode_masks(chunk)
            if start_step > 0:
                sources = generator.codec.encode_images(source_images[start : start + batch_size].to(device))
                noise = noised_source(sources, noise, start_step, num_steps)
            latents = euler_sample(generator.model, noise, mask_latents, num_steps=num_steps,
                                   guidance_scale=guidance_scale, start_step=start_step)
            images = generator.codec.decode(latents.float())
        out.append(images.float().clamp(0, 1).cpu())
        report_progress(on_progress, "generate", min(start + batch_size, masks.shape[0]), masks.shape[0])
    return torch.cat(out)


def _check_sources(source_images: torch.Tensor | None, masks: torch.Tensor, resolution: int) -> None:
    if source_images is None:
        raise InputError("--from-images", "the real source images to translate when --strength is below 1", "none")
    expected = (masks.shape[0], 3, resolution, resolution)
    if tuple(source_images.shape) != expected:
        raise InputError("source_images", f"one [3, {resolution}, {resolution}] image per mask {expected}",
                         str(tuple(source_images.shape)))
