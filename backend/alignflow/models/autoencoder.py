"""TAEF2: the tiny autoencoder distilled to the FLUX.2 VAE latent space (madebyollin/taesd, MIT licence).

Re-implemented from its published architecture because it ships as bare state dicts (no installable library defines
the ``flux_2`` variant with the pooled blocks); the state-dict keys are the ``nn.Sequential`` indices, so strict
loading checks the structure. RGB in [0, 1] -> latents [N, 32, H/8, W/8] -> RGB in [0, 1]. Frozen everywhere;
``decode`` stays differentiable with respect to its input, which the stage-2 reward needs.
"""

from __future__ import annotations

import torch
from torch import nn

from alignflow.weights import load_state_dict

WIDTH = 64
LATENT_CHANNELS = 32
POOL_EXPANSION = 4  # the pool branch widens 64 -> 256 channels for its GroupNorm(4, 256)


def conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    """3x3 'same' convolution, the only spatial kernel TAESD uses (keeps H and W so the /8 maths stays exact)."""
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of the latents to (-3, 3): the decoder was trained on that range, and unlike a hard clamp it keeps a
    gradient for out-of-range latents produced by the generator."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


def pool_branch(channels: int) -> nn.Sequential:
    """Per-pixel channel mixer with group norm, which the flux_2 variant adds next to the 32-channel latent."""
    hidden = POOL_EXPANSION * channels
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 1, bias=False), nn.GroupNorm(4, hidden), nn.ReLU(),
        nn.Conv2d(hidden, channels, 1, bias=False),
    )


class Block(nn.Module):
    """Residual block of three 3x3 convs; ``pooled`` blocks first add the pool branch (keys ``N.pool.{0,1,3}``)."""

    def __init__(self, n_in: int, n_out: int, pooled: bool = False):
        super().__init__()
        self.conv = nn.Sequential(conv(n_in, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(), conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = pool_branch(n_in) if pooled else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def build_encoder() -> nn.Sequential:
    """Encoder stack; its Sequential indices are the checkpoint's keys, so the order here is load-bearing."""
    layers: list[nn.Module] = [conv(3, WIDTH), Block(WIDTH, WIDTH)]
    for level in range(3):
        pooled = level == 2  # the last level, next to the latent: indices 11-13
        layers += [conv(WIDTH, WIDTH, stride=2, bias=False)] + [Block(WIDTH, WIDTH, pooled) for _ in range(3)]
    layers.append(conv(WIDTH, LATENT_CHANNELS))
    return nn.Sequential(*layers)


def build_decoder() -> nn.Sequential:
    """Decoder stack, mirror of the encoder (nearest-neighbour upsampling, as upstream)."""
    layers: list[nn.Module] = [Clamp(), conv(LATENT_CHANNELS, WIDTH), nn.ReLU()]
    for level in range(3):
        pooled = level == 0  # the first level, next to the latent: indices 3-5
        layers += [Block(WIDTH, WIDTH, pooled) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False)]
    layers += [Block(WIDTH, WIDTH), conv(WIDTH, 3)]
    return nn.Sequential(*layers)


class TinyAutoencoder(nn.Module):
    """A 2.7 M-parameter stand-in for the FLUX.2 VAE: fast enough on a CPU to decode inside every training step."""

    latent_channels: int = LATENT_CHANNELS
    downscale: int = 8

    def __init__(self) -> None:
        super().__init__()
        self.encoder = build_encoder()
        self.decoder = build_decoder()

    @classmethod
    def from_pretrained(cls, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TinyAutoencoder:
        """The released TAEF2 weights, frozen; the fp16 checkpoints are upcast because CPUs lack fast fp16 convs."""
        model = cls()
        model.encoder.load_state_dict(_as_float(load_state_dict("taef2_encoder")), strict=True)
        model.decoder.load_state_dict(_as_float(load_state_dict("taef2_decoder")), strict=True)
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """RGB [N, 3, H, W] in [0, 1] (H, W multiples of 8) -> latents [N, 32, H/8, W/8]."""
        return self.encoder(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> RGB in [0, 1]; clamped because the decoder overshoots slightly and callers save or score pixels."""
        return self.decoder(latents).clamp(0, 1)


def _as_float(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp32 copy of an fp16 state dict, so loading never depends on implicit dtype casting."""
    return {key: value.float() for key, value in state.items()}


def channel_statistics(latents: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over a set of latents [N, C, h, w]."""
    flat = latents.transpose(0, 1).reshape(latents.shape[1], -1).float()
    return flat.mean(dim=1).tolist(), flat.std(dim=1).clamp_min(1e-4).tolist()
