"""MedFlowSeg (Fig. 2a): a Flow Network on the noisy label x_t and a Condition Network on the image I.

u^_t = F_theta(x_t, I, t) (Eq. 2). The Condition Network is a plain UNet whose auxiliary head predicts the labels
(L_aux, Eq. 4); its last decoder feature drives DB-SA at the Flow Network's first encoder stage (Eq. 6-9) and its
bottleneck feature, refined by N stacked FA-Attention layers against the flow bottleneck (Eq. 10-12), is added to
the Flow Network's bottleneck.

Choices where the paper is silent: DB-SA gates the output of the first encoder level (after its residual blocks,
before the first downsampling), which is also that level's skip connection; the refined condition c^N enters the
flow bottleneck through a 1x1 convolution and an addition, between the two middle residual blocks. Everything that
depends on the image alone (the Condition Network, the DB-SA gate) is computed once per image by
:meth:`MedFlowSeg.condition` and reused at every Euler step and by every ensemble member.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D, Upsample2D
from torch import nn

from alignflow.runs.checkpoint import load_state_dict_strict
from alignflow.segmentation.conditioning import DualBranchSpatialAttention, FrequencyAwareAttention
from alignflow.segmentation.config import MedFlowSegConfig


class UNet(nn.Module):
    """Four-level UNet (Section 4.2): ``res_blocks`` residual blocks per level, stride-2 convolutions between levels,
    two middle blocks and a mirrored decoder with skip concatenation. With ``time_dim`` every block is
    time-conditioned (the Flow Network); without it, it is a standard UNet (the Condition Network).

    ``forward`` returns the last decoder feature (full resolution, ``channels[0]`` wide) and the head's output; two
    optional hooks let the Flow Network take its conditions: ``first_gate`` (DB-SA, Eq. 9) and ``bottleneck_hook``.
    """

    def __init__(self, config: MedFlowSegConfig, in_channels: int, out_channels: int, time_dim: int | None):
        super().__init__()
        channels, groups = config.channels, config.norm_groups

        def block(cin: int, cout: int) -> ResnetBlock2D:
            return ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=time_dim, groups=groups, dropout=config.dropout)

        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.encoder = nn.ModuleList()
        self.down = nn.ModuleList()
        previous = channels[0]
        for level, width in enumerate(channels):
            self.encoder.append(nn.ModuleList(block(previous if i == 0 else width, width) for i in range(config.res_blocks)))
            previous = width
            if level < len(channels) - 1:
                # A plain strided conv: diffusers' Downsample2D registers its conv under two names, which safetensors refuses.
                self.down.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
        self.middle = nn.ModuleList([block(channels[-1], channels[-1]), block(channels[-1], channels[-1])])
        self.decoder = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in reversed(range(len(channels))):
            width = channels[level]
            self.decoder.append(nn.ModuleList(block((previous + width) if i == 0 else width, width) for i in range(config.res_blocks)))
            previous = width
            if level > 0:
                self.up.append(Upsample2D(width, use_conv=True))
        self.head = nn.Sequential(nn.GroupNorm(groups, channels[0]), nn.SiLU(), nn.Conv2d(channels[0], out_channels, 3, padding=1))

    def forward(
        self,
        x: torch.Tensor,
        temb: torch.Tensor | None = None,
        first_gate: torch.Tensor | None = None,
        bottleneck_hook: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> UNetOutput:
        h = self.stem(x)
        skips = []
        for level, blocks in enumerate(self.encoder):
            for res_block in blocks:
                h = res_block(h, temb)
            if level == 0 and first_gate is not None:
                h = DualBranchSpatialAttention.apply(first_gate, h)  # Eq. 9
            skips.append(h)
            if level < len(self.down):
                h = self.down[level](h)
        h = self.middle[0](h, temb)
        bottleneck = h
        if bottleneck_hook is not None:
            h = bottleneck_hook(h)
        h = self.middle[1](h, temb)
        for index, blocks in enumerate(self.decoder):
            h = torch.cat([h, skips.pop()], dim=1)
            for res_block in blocks:
                h = res_block(h, temb)
            if index < len(self.up):
                h = self.up[index](h)
        return UNetOutput(last_feature=h, bottleneck=bottleneck, head=self.head(h))


@dataclass
class UNetOutput:
    last_feature: torch.Tensor  # f^{-1}: the last, full-resolution decoder feature
    bottleneck: torch.Tensor  # after the first middle block
    head: torch.Tensor


@dataclass
class ConditionFeatures:
    """What the image contributes, computed once per image (Condition Network + DB-SA gate)."""

    gate: torch.Tensor  # g of Eq. 8, [B, channels[0], H, W]
    bottleneck: torch.Tensor  # c^0, [B, channels[3], H/8, W/8]
    aux_logits: torch.Tensor  # the auxiliary head (Eq. 4), [B, K, H, W]

    def repeat(self, times: int) -> ConditionFeatures:
        """Each image's features ``times`` times in a row, for an ensemble drawn as one batch."""
        return ConditionFeatures(*(t.repeat_interleave(times, dim=0) for t in (self.gate, self.bottleneck, self.aux_logits)))


class MedFlowSeg(nn.Module):
    """u^_t = F_theta(x_t, I, t) (Eq. 2) on labels encoded as K channels (see :mod:`alignflow.segmentation.flow`)."""

    def __init__(self, config: MedFlowSegConfig):
        super().__init__()
        config.validate()
        self.config = config
        channels, time_dim = config.channels, config.time_embed_dim
        self.time_proj = Timesteps(time_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_dim, time_dim)
        self.condition_network = UNet(config, config.image_channels, config.num_classes, time_dim=None)
        self.flow_network = UNet(config, config.num_classes, config.num_classes, time_dim=time_dim)
        self.db_sa = DualBranchSpatialAttention(channels[0], channels[0], config.low_pass_kernel, config.high_pass_kernel)
        self.fa_attention = nn.ModuleList(
            FrequencyAwareAttention(channels[-1], config.token_dim, config.attention_heads, config.patch_size, time_dim, config.modulator_blocks)
            for _ in range(config.fa_layers)
        )
        self.semantic_projection = nn.Conv2d(channels[-1], channels[-1], 1)

    def condition(self, images: torch.Tensor) -> ConditionFeatures:
        """Run the Condition Network on images [B, C, H, W] in [0, 1] and derive the DB-SA gate."""
        out = self.condition_network(images * 2.0 - 1.0)
        return ConditionFeatures(gate=self.db_sa(out.last_feature), bottleneck=out.bottleneck, aux_logits=out.head)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        # t in [0, 1] is scaled to diffusers' usual 0..1000 range so the sinusoid frequencies are all used.
        return self.time_embedding(self.time_proj(t * 1000.0).to(self.time_embedding.linear_1.weight.dtype))

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: ConditionFeatures) -> torch.Tensor:
        """u^_t for noisy labels x_t [B, K, H, W] at times t [B] given the image features ``cond``."""
        temb = self.embed_time(t)

        def semantic_condition(flow_bottleneck: torch.Tensor) -> torch.Tensor:
            c = cond.bottleneck
            for layer in self.fa_attention:  # stacked N times, c^0 -> c^N
                c = layer(flow_bottleneck, c, temb)
            return flow_bottleneck + self.semantic_projection(c)

        return self.flow_network(x_t, temb, first_gate=cond.gate, bottleneck_hook=semantic_condition).head

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u^_t, auxiliary logits): one training evaluation of Eq. 2 and the Condition Network's head."""
        cond = self.condition(images)
        return self.velocity(x_t, t, cond), cond.aux_logits

    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def load_saved_state_dict(self, state: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
        load_state_dict_strict(self, state, where, "weights matching the segmenter config")
