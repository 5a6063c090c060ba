"""The paper-faithful generator: Stable Diffusion 3.5 Medium + an SD3 ControlNet, loaded with ``from_pretrained``.

Needs a GPU and a local copy (or hub access) of the weights, which this project cannot fetch offline: the code path
is exercised in the tests with tiny randomly initialised configurations only (see docs/architecture.md).
As in the paper (Section 3), the transformer and the VAE stay frozen and only the ControlNet is trained.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, SD3ControlNetModel, SD3Transformer2DModel
from torch import nn

from alignflow.errors import InputError
from alignflow.generator.model import AlignFlowGenerator, FixedPromptConditioning, GeneratorConfig


def _require_pretrained(config: GeneratorConfig) -> str:
    if not config.pretrained:
        raise InputError("generator.pretrained", "a local folder or hub id of Stable Diffusion 3.5 Medium (diffusers format)", "nothing")
    return config.pretrained


def encode_prompts(config: GeneratorConfig, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of ["", prompt] from the pipeline's three text encoders, computed once and then freed."""
    from diffusers import StableDiffusion3Pipeline

    pipeline = StableDiffusion3Pipeline.from_pretrained(_require_pretrained(config), transformer=None, vae=None)
    pipeline.to(device)
    with torch.no_grad():
        embeds, _, pooled, _ = pipeline.encode_prompt(
            prompt=["", config.prompt], prompt_2=None, prompt_3=None, do_classifier_free_guidance=False, device=device
        )
    del pipeline
    return embeds.cpu(), pooled.cpu()


def build_sd3_generator(
    config: GeneratorConfig, prompt_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None
) -> AlignFlowGenerator:
    """SD3.5 transformer (frozen) + ControlNet (pretrained, or initialised from the transformer's first layers)."""
    path = _require_pretrained(config)
    transformer = SD3Transformer2DModel.from_pretrained(path, subfolder="transformer").requires_grad_(False)
    if config.controlnet_pretrained:
        controlnet = SD3ControlNetModel.from_pretrained(config.controlnet_pretrained)
    else:
        controlnet = SD3ControlNetModel.from_transformer(
            transformer, num_layers=config.controlnet_layers, num_extra_conditioning_channels=0
        )
    config.latent_channels = transformer.config.in_channels
    embeds, pooled = prompt_embeddings if prompt_embeddings is not None else encode_prompts(config)
    return AlignFlowGenerator(config, transformer, controlnet, FixedPromptConditioning(embeds, pooled))


class SD3Autoencoder(nn.Module):
    """The SD3.5 VAE with its own scaling and shift factors, behind the same encode/decode interface as TAEF2."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae.requires_grad_(False).eval()
        self.scaling = float(vae.config.scaling_factor)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        latents = self.vae.encode(images * 2.0 - 1.0).latent_dist.mode()
        return (latents - self.shift) * self.scaling

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode(latents / self.scaling + self.shift).sample
        return ((images + 1.0) / 2.0).clamp(0.0, 1.0)


def load_sd3_autoencoder(config: GeneratorConfig) -> SD3Autoencoder:
    return SD3Autoencoder(AutoencoderKL.from_pretrained(_require_pretrained(config), subfolder="vae"))
