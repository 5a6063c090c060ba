"""The flow-matching mask generator of AlignFlow's mask synthesis (paper Section 3.3, Figure 2(b)).

Same flow matching as the image generator (Eq. 1-2: x_t = t x1 + (1 - t) eps, velocity target x1 - eps, Euler
sampling of Eq. 14), on masks instead of images, with diffusers' ``SD3Transformer2DModel`` as the backbone. It is
unconditional: a synthetic mask is a fresh draw from the source domain's mask distribution, and the best-of-K
filter (``synthesis.py``) then pairs each real mask with the candidate most like it. The paper fine-tunes SD3.5 on
the masks; this compact model is trained from scratch on a CPU in minutes.

Masks are modelled in one of two spaces (``MaskGeneratorConfig.space``), measured against each other in
docs/benchmarks.md:

* ``latent``: the TAEF2 latents of the mask rendered as a grey image (as the image generator's ControlNet sees
  masks), decoded back to grey by the TAEF2 decoder;
* ``pixel``: the grey rendering itself at ``pixel_size`` (area-downsampled, so edges carry partial values), scaled to
  [-1, 1] and upsampled bilinearly to ``resolution`` after sampling.

Either way a raw generated mask is a grey map in about [0, 1] where class c of K sits at c / (K - 1), the input the
post-processing chain expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers import SD3Transformer2DModel
from torch import nn

from alignflow.config import DictConfig
from alignflow.data import mask_to_rgb
from alignflow.errors import InputError
from alignflow.runs.checkpoint import load_state_dict_strict

LATENT_DOWNSAMPLING = 8  # TAEF2: 8x8 pixels per latent


@dataclass
class MaskGeneratorConfig(DictConfig):
    """Architecture and data space of the mask generator; the defaults train on a 2-core CPU in minutes."""

    config_name = "mask generator config"
    validate_on_load = True

    space: str = "latent"  # "latent" or "pixel" (see module docstring)
    resolution: int = 128  # side of the generated masks in pixels
    pixel_size: int = 64  # pixel space: side at which masks are modelled
    patch_size: int | None = None  # None: 2 in latent space (64 tokens at 128 px), 4 in pixel space (256 at 64 px)
    num_layers: int = 6
    attention_head_dim: int = 32
    num_attention_heads: int = 6
    context_tokens: int = 4
    latent_channels: int = 32  # TAEF2 latent width
    num_classes: int = 2
    # Per-channel statistics of the training masks' latents (latent space; filled in before the first step).
    latent_mean: list[float] = field(default_factory=list)
    latent_std: list[float] = field(default_factory=list)

    @property
    def width(self) -> int:
        return self.attention_head_dim * self.num_attention_heads

    @property
    def channels(self) -> int:
        return self.latent_channels if self.space == "latent" else 1

    @property
    def sample_size(self) -> int:
        """Side of the modelled array: latent side or ``pixel_size``."""
        return self.resolution // LATENT_DOWNSAMPLING if self.space == "latent" else self.pixel_size

    @property
    def patch(self) -> int:
        return self.patch_size or (2 if self.space == "latent" else 4)

    def validate(self) -> None:
        if self.space not in ("latent", "pixel"):
            raise InputError("mask_generator.space", "'latent' or 'pixel'", repr(self.space))
        if self.space == "latent" and self.resolution % (LATENT_DOWNSAMPLING * self.patch):
            raise InputError("mask_generator.resolution", f"a multiple of {LATENT_DOWNSAMPLING * self.patch}", str(self.resolution))
        if self.space == "pixel" and (self.pixel_size % self.patch or self.pixel_size > self.resolution):
            raise InputError("mask_generator.pixel_size", f"a multiple of the patch size {self.patch}, at most the resolution {self.resolution}", str(self.pixel_size))
        if self.num_classes < 2:
            raise InputError("mask_generator.num_classes", "at least 2 (background + one class)", str(self.num_classes))


class MaskGenerator(nn.Module):
    """v_theta(x_t, t): an SD3 transformer with learned context tokens in place of a prompt (no condition)."""

    def __init__(self, config: MaskGeneratorConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.transformer = SD3Transformer2DModel(
            sample_size=config.sample_size,
            patch_size=config.patch,
            in_channels=config.channels,
            out_channels=config.channels,
            num_layers=config.num_layers,
            attention_head_dim=config.attention_head_dim,
            num_attention_heads=config.num_attention_heads,
            joint_attention_dim=config.width,
            caption_projection_dim=config.width,
            pooled_projection_dim=config.width,
            pos_embed_max_size=max(64, 2 * config.sample_size // config.patch),
        )
        self.context = nn.Parameter(torch.randn(1, config.context_tokens, config.width) * 0.02)
        self.pooled = nn.Parameter(torch.zeros(1, config.width))

    def velocity(
        self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predicted velocity x1 - eps at paper time ``t`` (the same time convention as the image generator).

        ``condition`` and ``keep`` exist so the engine's flow-matching loss and sampler drive both generators; an
        unconditional model ignores them.
        """
        batch = x_t.shape[0]
        prediction = self.transformer(
            hidden_states=x_t,
            encoder_hidden_states=self.context.expand(batch, -1, -1),
            pooled_projections=self.pooled.expand(batch, -1),
            timestep=(1.0 - t) * 1000.0,  # paper t -> SD3 noise level, as in models/generator.py
            return_dict=False,
        )[0]
        return -prediction

    def guided_velocity(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None, guidance_scale: float) -> torch.Tensor:
        return self.velocity(x_t, t)  # no condition, so nothing to guide

    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def load_saved_state_dict(self, state: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
        load_state_dict_strict(self, state, where, "weights matching the mask generator config")


class MaskCodec(nn.Module):
    """Class-id masks <-> the generator's normalised data space, and back to raw grey masks."""

    def __init__(self, config: MaskGeneratorConfig, autoencoder: nn.Module | None):
        super().__init__()
        self.config = config
        self.autoencoder = autoencoder
        channels = config.channels
        self.register_buffer("mean", torch.tensor(config.latent_mean or [0.0] * channels).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.latent_std or [1.0] * channels).view(1, -1, 1, 1), persistent=False)

    def grey(self, masks: torch.Tensor) -> torch.Tensor:
        """Class ids [N, H, W] -> grey [N, 1, H, W] in [0, 1], class c at c / (K - 1)."""
        return mask_to_rgb(masks, self.config.num_classes)[:, :1].to(self.mean.device)

    def raw_encode(self, masks: torch.Tensor) -> torch.Tensor:
        """Un-normalised data-space tensors of class-id masks at ``resolution``."""
        grey = self.grey(masks)
        if self.config.space == "latent":
            return self.autoencoder.encode(grey.expand(-1, 3, -1, -1))
        return F.interpolate(grey, size=self.config.pixel_size, mode="area") * 2.0 - 1.0

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.mean) / self.std

    def encode(self, masks: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.raw_encode(masks))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised samples -> raw grey masks [N, resolution, resolution] (about [0, 1]; not yet thresholded)."""
        raw = x * self.std + self.mean
        if self.config.space == "latent":
            return self.autoencoder.decode(raw).mean(dim=1)
        grey = (raw + 1.0) / 2.0
        return F.interpolate(grey, size=self.config.resolution, mode="bilinear", align_corners=False)[:, 0]


def build_mask_codec(config: MaskGeneratorConfig, device: torch.device, autoencoder: nn.Module | None = None) -> MaskCodec:
    """The codec of the config's space; latent space loads the frozen TAEF2 autoencoder."""
    if config.space == "latent" and autoencoder is None:
        from alignflow.models.autoencoder import TinyAutoencoder

        autoencoder = TinyAutoencoder.from_pretrained()
    return MaskCodec(config, autoencoder if config.space == "latent" else None).to(device)
