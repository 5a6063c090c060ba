"""Image and mask <-> normalised latent space of the frozen autoencoder (Algorithm 1, line 3 and line 17)."""

from __future__ import annotations

import torch
from torch import nn

from alignflow.data import mask_to_rgb
from alignflow.generator.model import GeneratorConfig


class LatentCodec(nn.Module):
    """Wraps the frozen autoencoder with the generator's latent normalisation.

    Masks enter the model as the paper does it: rendered as an image and encoded by the same autoencoder (c_m = E(M)).
    """

    def __init__(self, autoencoder: nn.Module, config: GeneratorConfig):
        super().__init__()
        self.autoencoder = autoencoder
        self.num_classes = config.num_classes
        self._set("latent", config.latent_mean, config.latent_std, config.latent_channels)
        self._set("mask_latent", config.mask_latent_mean, config.mask_latent_std, config.latent_channels)

    def _set(self, name: str, mean: list[float], std: list[float], channels: int) -> None:
        mean_t = torch.tensor(mean or [0.0] * channels).view(1, -1, 1, 1)
        std_t = torch.tensor(std or [1.0] * channels).view(1, -1, 1, 1)
        self.register_buffer(f"{name}_mean", mean_t, persistent=False)
        self.register_buffer(f"{name}_std", std_t, persistent=False)

    def raw_image_latents(self, images: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(images)

    def raw_mask_latents(self, masks: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(mask_to_rgb(masks, self.num_classes).to(self.latent_mean.device))

    def normalise_images(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.latent_mean) / self.latent_std

    def normalise_masks(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.mask_latent_mean) / self.mask_latent_std

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalise_images(self.raw_image_latents(images))

    def encode_masks(self, masks: torch.Tensor) -> torch.Tensor:
        return self.normalise_masks(self.raw_mask_latents(masks))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> images in [0, 1]; differentiable with respect to the latents (stage 2)."""
        return self.autoencoder.decode(latents * self.latent_std + self.latent_mean)


def build_codec(config: GeneratorConfig, device: torch.device, autoencoder: nn.Module | None = None) -> LatentCodec:
    """The frozen autoencoder of the generator's kind (TAEF2 for compact, the SD3.5 VAE for sd3)."""
    if autoencoder is None:
        if config.kind == "sd3":
            from alignflow.generator.sd3 import load_sd3_autoencoder

            autoencoder = load_sd3_autoencoder(config)
        else:
            from alignflow.models.autoencoder import TinyAutoencoder

            autoencoder = TinyAutoencoder.from_pretrained()
    return LatentCodec(autoencoder, config).to(device)
