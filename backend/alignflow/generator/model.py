"""The mask-conditioned flow-matching generator v_theta(x_t, t, c_m, c_p) of AlignFlow (paper Section 3).

One implementation, two sizes, both built from diffusers' SD3 classes:

* ``compact`` (default, CPU-trainable): a small ``SD3Transformer2DModel`` plus a small ``SD3ControlNetModel``, trained
  from scratch in the latent space of the pretrained TAEF2 tiny autoencoder. Text conditioning is replaced by a
  learned conditioning (a few context tokens and a pooled vector) that enters through the same inputs SD3 uses.
* ``sd3`` (paper-faithful, GPU): Stable Diffusion 3.5 Medium and an SD3 ControlNet loaded with ``from_pretrained``;
  the prompt template "An image of ..." is encoded once with the pipeline's text encoders (see ``sd3.py``).

Time convention (paper, Eq. 2 and 15): t = 0 is noise, t = 1 is data, x_t = t x1 + (1 - t) eps, and the model
predicts the velocity x1 - eps. diffusers' SD3 models use the opposite convention (sigma = 1 - t is the noise
level, timestep = 1000 sigma, prediction eps - x1), so ``velocity`` converts at the boundary: this keeps the
pretrained SD3.5 weights valid and the rest of the code in the paper's notation.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from diffusers import SD3ControlNetModel, SD3Transformer2DModel
from torch import nn

from alignflow.config import DictConfig
from alignflow.errors import InputError
from alignflow.runs.checkpoint import load_state_dict_strict


@dataclass
class GeneratorConfig(DictConfig):
    """Architecture of the generator. ``compact`` defaults train on a 2-core CPU in minutes at 128 px."""

    config_name = "generator config"
    validate_on_load = True

    kind: str = "compact"  # "compact" or "sd3"
    resolution: int = 128  # image side in pixels; the latent side is resolution / 8
    latent_channels: int = 32  # TAEF2 latent width
    # 2x2 latent patches: 64 tokens at 128 px, 3x faster than patch 1 on a CPU; the patch embedding is a learned
    # linear map of all 2x2x32 latent values, so no mask detail is averaged away on the way in.
    patch_size: int = 2
    num_layers: int = 6
    controlnet_layers: int = 3
    attention_head_dim: int = 32
    num_attention_heads: int = 6
    context_tokens: int = 4  # learned stand-in for the prompt tokens (compact only)
    num_classes: int = 2  # mask classes including background
    # Per-channel latent statistics of the training set (filled in at the start of stage 1): flow matching assumes
    # data of roughly unit scale, TAEF2 latents are not.
    latent_mean: list[float] = field(default_factory=list)
    latent_std: list[float] = field(default_factory=list)
    mask_latent_mean: list[float] = field(default_factory=list)
    mask_latent_std: list[float] = field(default_factory=list)
    # sd3 only: where the pretrained pipeline and (optionally) the ControlNet come from.
    pretrained: str | None = None
    controlnet_pretrained: str | None = None
    prompt: str = "An image of a polyp"  # the paper's template "An image of ..."
    # Alignment Regularization (training/alignment_regularization.py): a second output head that denoises the mask
    # latents during training. Saved and loaded with the generator; generation never uses it.
    mask_head: bool = False

    @property
    def width(self) -> int:
        return self.attention_head_dim * self.num_attention_heads

    @property
    def latent_size(self) -> int:
        return self.resolution // 8

    def validate(self) -> None:
        if self.kind not in ("compact", "sd3"):
            raise InputError("generator.kind", "'compact' or 'sd3'", repr(self.kind))
        if self.resolution % (8 * self.patch_size):
            raise InputError("generator.resolution", f"a multiple of {8 * self.patch_size}", str(self.resolution))
        if self.num_classes < 2:
            raise InputError("generator.num_classes", "at least 2 (background + one class)", str(self.num_classes))


class LearnedConditioning(nn.Module):
    """A learned replacement for SD3's text embeddings (compact model).

    ``encoder_hidden_states`` and ``pooled_projections`` are parameters instead of text-encoder outputs. A second,
    "null" set stands for the dropped condition, so classifier-free guidance works as with an empty prompt.
    """

    def __init__(self, num_tokens: int, width: int):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(2, num_tokens, width) * 0.02)  # [null, conditional]
        self.pooled = nn.Parameter(torch.zeros(2, width))

    def forward(self, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = keep.long()
        return self.tokens[index], self.pooled[index]


class FixedPromptConditioning(nn.Module):
    """Cached text embeddings of the prompt and of the empty prompt (sd3 model).

    The prompt is a fixed template, so the three SD3 text encoders run once (``sd3.encode_prompts``) and are freed;
    these buffers are what the transformer sees. Dropping the prompt (probability 0.5 in the paper) selects the
    empty-prompt embedding.
    """

    def __init__(self, prompt_embeds: torch.Tensor, pooled_embeds: torch.Tensor):
        super().__init__()
        # [2, tokens, dim] and [2, dim]: index 0 = empty prompt, 1 = prompt.
        self.register_buffer("tokens", prompt_embeds)
        self.register_buffer("pooled", pooled_embeds)

    def forward(self, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = keep.long()
        return self.tokens[index], self.pooled[index]


class MaskHead(nn.Module):
    """The mask branch's output layers (free-lunch paper, Eq. 3): its own copy of the transformer's final norm and
    projection, on the shared transformer body. Starts as a copy of the image head, so a stage-1 generator that
    gains the head later begins with consistent predictions."""

    def __init__(self, transformer: SD3Transformer2DModel):
        super().__init__()
        self.norm_out = copy.deepcopy(transformer.norm_out)
        self.proj_out = copy.deepcopy(transformer.proj_out)
        self.requires_grad_(True)  # trained even when the copied (sd3) transformer is frozen


class AlignFlowGenerator(nn.Module):
    """v_theta(x_t, t, c_m, c_p): SD3 transformer with a ControlNet branch that reads the mask latents c_m."""

    def __init__(
        self,
        config: GeneratorConfig,
        transformer: SD3Transformer2DModel,
        controlnet: SD3ControlNetModel,
        conditioning: nn.Module,
    ):
        super().__init__()
        self.config = config
        self.transformer = transformer
        self.controlnet = controlnet
        self.conditioning = conditioning
        self.mask_head: MaskHead | None = None

    def add_mask_head(self) -> None:
        """Build the Alignment Regularization head (a no-op when there is one)."""
        if self.mask_head is None:
            self.mask_head = MaskHead(self.transformer).to(next(self.transformer.parameters()).device)
        self.config.mask_head = True

    @contextlib.contextmanager
    def _mask_head_output(self) -> Iterator[None]:
        """Route the transformer's output through the mask head for one call.

        diffusers' SD3 transformer applies ``norm_out``, ``proj_out`` and its unpatchify inside ``forward``, with no
        way to ask for a second head; swapping the two layers for the call reuses everything else unchanged.
        """
        if self.mask_head is None:
            raise InputError("generator.mask_head", "a generator built with the mask head (alignment regularization)", "none")
        image_head = self.transformer.norm_out, self.transformer.proj_out
        self.transformer.norm_out, self.transformer.proj_out = self.mask_head.norm_out, self.mask_head.proj_out
        try:
            yield
        finally:
            self.transformer.norm_out, self.transformer.proj_out = image_head

    def velocity(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        mask_latents: torch.Tensor,
        keep: torch.Tensor | None = None,
        head: str = "image",
    ) -> torch.Tensor:
        """Predicted velocity x1 - eps at paper time ``t`` (shape [N]).

        ``keep`` (bool, [N]) marks the samples that see their condition; the others see the null/empty prompt and
        no ControlNet residuals, which is the unconditional branch of classifier-free guidance. ``head="mask"``
        denoises mask latents with the mask head (training with Alignment Regularization only).
        """
        if head == "mask":
            with self._mask_head_output():
                return self.velocity(x_t, t, mask_latents, keep)
        batch = x_t.shape[0]
        if keep is None:
            keep = torch.ones(batch, dtype=torch.bool, device=x_t.device)
        context, pooled = self.conditioning(keep)
        timestep = (1.0 - t) * 1000.0  # paper t -> SD3 noise level (see module docstring)
        residuals = self.controlnet(
            hidden_states=x_t,
            controlnet_cond=mask_latents,
            encoder_hidden_states=context,
            pooled_projections=pooled,
            timestep=timestep,
            return_dict=False,
        )[0]
        gate = keep.to(x_t.dtype).view(batch, 1, 1)
        residuals = [residual * gate for residual in residuals]
        prediction = self.transformer(
            hidden_states=x_t,
            encoder_hidden_states=context,
            pooled_projections=pooled,
            timestep=timestep,
            block_controlnet_hidden_states=residuals,
            return_dict=False,
        )[0]
        return -prediction  # SD3 predicts eps - x1

    def guided_velocity(
        self, x_t: torch.Tensor, t: torch.Tensor, mask_latents: torch.Tensor, guidance_scale: float
    ) -> torch.Tensor:
        """Classifier-free guidance: v_uncond + w (v_cond - v_uncond), both branches in one batched call."""
        if guidance_scale == 1.0:
            return self.velocity(x_t, t, mask_latents)
        batch = x_t.shape[0]
        keep = torch.cat([torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)]).to(x_t.device)
        both = self.velocity(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([mask_latents, mask_latents]), keep)
        unconditional, conditional = both.chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: everything for compact; for sd3 not the frozen SD3.5 transformer (GBs), which is
        reloaded from ``config.pretrained``."""
        state = self.state_dict()
        if self.config.kind == "sd3":
            state = {key: value for key, value in state.items() if not key.startswith("transformer.")}
        return state

    def load_saved_state_dict(self, state: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
        load_state_dict_strict(self, state, where, "weights matching the generator config",
                               skip=(lambda key: key.startswith("transformer.")) if self.config.kind == "sd3" else None)

    def tunable_parameters(self, which: str) -> list[nn.Parameter]:
        """Parameters trained in a stage: "all" (compact, trained from scratch) or "controlnet" (the paper)."""
        if which == "all":
            return [p for p in self.parameters() if p.requires_grad]
        if which == "controlnet":
            return list(self.controlnet.parameters()) + (list(self.mask_head.parameters()) if self.mask_head else [])
        raise InputError("trainable", "'all' or 'controlnet'", repr(which))


def compact_backbones(config: GeneratorConfig) -> tuple[SD3Transformer2DModel, SD3ControlNetModel]:
    shared = dict(
        sample_size=config.latent_size,
        patch_size=config.patch_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        attention_head_dim=config.attention_head_dim,
        num_attention_heads=config.num_attention_heads,
        joint_attention_dim=config.width,
        caption_projection_dim=config.width,
        pooled_projection_dim=config.width,
        # Position embeddings are cropped from a larger table, so other resolutions still work at inference.
        pos_embed_max_size=max(64, 2 * config.latent_size // config.patch_size),
    )
    transformer = SD3Transformer2DModel(num_layers=config.num_layers, **shared)
    controlnet = SD3ControlNetModel(num_layers=config.controlnet_layers, **shared)
    return transformer, controlnet
