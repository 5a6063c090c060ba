"""TAEF2: the tiny autoencoder distilled to the FLUX.2 VAE latent space (madebyollin/taesd, MIT licence).

Re-implemented from its published architecture because it ships as bare state dicts (no library defines the
``flux_2`` variant with the pooled blocks); the state-dict keys are the ``nn.Sequential`` indices, so strict loading
checks the structure. RGB in [0, 1] -> latents [N, 32, H/8, W/8] -> RGB in [0, 1]. Frozen everywhere; ``decode`` stays
differentiable with respect to its input, which the stage-2 reward needs.
"""

from __future__ import annotations

import torch
from torch import nn

from ..weights import load_state_dict

WIDTH = 64
LATENT_CHANNELS = 32


def conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of the latents to about [-3, 3] before decoding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Three 3x3 convs with a skip; the ``pooled`` blocks next to the latent first add a channel-mixing branch."""

    def __init__(self, n_in: int, n_out: int, pooled: bool = False):
        super().__init__()
        self.conv = nn.Sequential(conv(n_in, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(), conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = (
            nn.Sequential(
                nn.Conv2d(n_in, 4 * n_in, 1, bias=False), nn.GroupNorm(4, 4 * n_in), nn.ReLU(),
                nn.Conv2d(4 * n_in, n_in, 1, bias=False),
            )
            if pooled
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def build_encoder() -> nn.Sequential:
    layers: list[nn.Module] = [conv(3, WIDTH), Block(WIDTH, WIDTH)]
    for level in range(3):
        pooled = level == 2  # encoder indices 11-13
        layers += [conv(WIDTH, WIDTH, stride=2, bias=False)] + [Block(WIDTH, WIDTH, pooled) for _ in range(3)]
    layers.append(conv(WIDTH, LATENT_CHANNELS))
    return nn.Sequential(*layers)


def build_decoder() -> nn.Sequential:
    layers: list[nn.Module] = [Clamp(), conv(LATENT_CHANNELS, WIDTH), nn.ReLU()]
    for level in range(3):
        pooled = level == 0  # decoder indices 3-5
        layers += [Block(WIDTH, WIDTH, pooled) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False)]
    layers += [Block(WIDTH, WIDTH), conv(WIDTH, 3)]
    return nn.Sequential(*layers)


class TinyAutoencoder(nn.Module):
    latent_channels = LATENT_CHANNELS
    downscale = 8

    def __init__(self) -> None:
        super().__init__()
        self.encoder = build_encoder()
        self.decoder = build_decoder()

    @classmethod
    def from_pretrained(cls, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TinyAutoencoder:
        model = cls()
        model.encoder.load_state_dict(load_state_dict("taef2_encoder"), strict=True)
        model.decoder.load_state_dict(load_state_dict("taef2_decoder"), strict=True)
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents).clamp(0, 1)
