"""MedFlowSeg's two conditioning mechanisms: DB-SA (Section 3.3, Eq. 6-9) and FA-Attention (Section 3.4, Eq. 10-12).

Where the paper leaves a detail open, the choice made here is stated in the docstring of the module concerned.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from torch import nn

# --------------------------------------------------------------------------------------------------------------
# Structural condition: Dual-Branch Spatial Attention (DB-SA)
# --------------------------------------------------------------------------------------------------------------


class LearnableGaussianBlur(nn.Module):
    """Depthwise Gaussian low-pass filter whose width (one sigma per channel) is learned.

    Written by hand because library blurs (kornia, torchvision) take sigma as a fixed number, not a parameter that
    receives gradients. Sigma starts at OpenCV's default for the kernel size, 0.3 ((k - 1) / 2 - 1) + 0.8 (0.8 for
    k = 3, 1.1 for k = 5). Borders are reflected so the filter does not invent a dark frame.
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
        self.log_sigma = nn.Parameter(torch.full((channels,), math.log(sigma)))

    def kernel(self) -> torch.Tensor:
        radius = torch.arange(self.kernel_size, device=self.log_sigma.device, dtype=torch.float32) - (self.kernel_size - 1) / 2
        sigma = self.log_sigma.float().exp()[:, None]
        profile = torch.exp(-(radius[None, :] ** 2) / (2 * sigma**2))
        profile = profile / profile.sum(dim=1, keepdim=True)
        return (profile[:, :, None] * profile[:, None, :]).unsqueeze(1)  # [C, 1, k, k], separable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size // 2
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        return F.conv2d(padded, self.kernel().to(x.dtype), groups=x.shape[1])


class DualBranchSpatialAttention(nn.Module):
    """DB-SA: a gate g from the Condition Network's last decoder feature, applied to the Flow Network's first one.

    Eq. 6  f_str  = f_cond^{-1} * k_conv3x3
    Eq. 7  f_low  = (f_str * k_gauss^l) * k_conv3x3^l              (Gaussian kernel 3)
           f_high = (f_str - f_str * k_gauss^h) * k_conv3x3^h      (Gaussian kernel 5)
    Eq. 8  g      = sigmoid(concat(f_high, f_low) * k_conv1x1^g)
    Eq. 9  f'_flow^0 = f_flow^0 + g . f_flow^0                      (see :meth:`apply`)

    g depends on the image only, so it is computed once per image and reused at every Euler step.
    """

    def __init__(self, cond_channels: int, flow_channels: int, low_kernel: int = 3, high_kernel: int = 5):
        super().__init__()
        self.structure = nn.Conv2d(cond_channels, cond_channels, 3, padding=1)
        self.low_pass = LearnableGaussianBlur(cond_channels, low_kernel)
        self.high_pass_blur = LearnableGaussianBlur(cond_channels, high_kernel)
        self.low_conv = nn.Conv2d(cond_channels, cond_channels, 3, padding=1)
        self.high_conv = nn.Conv2d(cond_channels, cond_channels, 3, padding=1)
        self.gate = nn.Conv2d(2 * cond_channels, flow_channels, 1)

    def forward(self, cond_feature: torch.Tensor) -> torch.Tensor:
        f_str = self.structure(cond_feature)  # Eq. 6
        f_low = self.low_conv(self.low_pass(f_str))  # Eq. 7
        f_high = self.high_conv(f_str - self.high_pass_blur(f_str))
        return torch.sigmoid(self.gate(torch.cat([f_high, f_low], dim=1)))  # Eq. 8

    @staticmethod
    def apply(gate: torch.Tensor, flow_feature: torch.Tensor) -> torch.Tensor:
        return flow_feature + gate * flow_feature  # Eq. 9


# --------------------------------------------------------------------------------------------------------------
# Semantic condition: Frequency-Aware Attention (FA-Attention)
# --------------------------------------------------------------------------------------------------------------


class FiLM(nn.Module):
    """Feature-wise linear modulation x (1 + gamma(t)) + beta(t) from the time embedding (identity at start)."""

    def __init__(self, time_dim: int, channels: int):
        super().__init__()
        self.project = nn.Linear(time_dim, 2 * channels)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.project(F.silu(temb)).chunk(2, dim=1)
        return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


def spectrum(x: torch.Tensor) -> torch.Tensor:
    """Centred 2-D FFT of a real feature as a real map [B, 2C, H, W] (real parts, then imaginary parts).

    The full (not the one-sided) spectrum keeps the H x W grid of the spatial branch, so spectral and spatial tokens
    correspond one to one in the Neural Modulator; the shift puts low frequencies together in the centre patches.
    The FFT runs in float32 (CPU FFTs do not take bfloat16).
    """
    freq = torch.fft.fftshift(torch.fft.fft2(x.float(), norm="ortho"), dim=(-2, -1))
    return torch.cat([freq.real, freq.imag], dim=1).to(x.dtype)


def inverse_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`spectrum`: [B, 2C, H, W] -> the real part of the IFFT, [B, C, H, W]."""
    real, imag = x.float().chunk(2, dim=1)
    freq = torch.fft.ifftshift(torch.complex(real, imag), dim=(-2, -1))
    return torch.fft.ifft2(freq, norm="ortho").real.to(x.dtype)


def positional_encoding(dim: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions [1, H*W, D], so the model runs at any resolution (no learned table)."""
    grid = get_2d_sincos_pos_embed(dim, (height, width), base_size=height, output_type="pt")
    return grid.to(device=device, dtype=torch.float32).unsqueeze(0)


class PatchTokens(nn.Module):
    """FiLM(t) then a p x p patch embedding: a feature map [B, C, H, W] -> tokens [B, (H/p)(W/p), D]."""

    def __init__(self, channels: int, dim: int, patch: int, time_dim: int):
        super().__init__()
        self.film = FiLM(time_dim, channels)
        self.embed = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.embed(self.film(x, temb)).flatten(2).transpose(1, 2)


class TokenDiscrepancyExtractor(nn.Module):
    """TD-X (Fig. 3, Eq. 11): agreement, difference and residual cues -> evidence token T_z -> recalibrated tokens.

    Eq. 11  T_a = T_f . T_c,  T_d = |T_f - T_c|,  T_r = T_f - T_c  (on layer-normalised tokens, so the product
    stays in range). Each cue has its own encoder (Linear-GELU); their concatenation is fused into T_z by a linear
    layer. The paper does not spell out the recalibration; here it is a squeeze-excitation style gate,
    T~ = T . sigmoid(W T_z), one W per stream.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.norm_flow = nn.LayerNorm(dim)
        self.norm_cond = nn.LayerNorm(dim)
        self.encode = nn.ModuleDict({cue: nn.Sequential(nn.Linear(dim, dim), nn.GELU()) for cue in ("agreement", "difference", "residual")})
        self.fuse = nn.Linear(3 * dim, dim)
        self.recalibrate_flow = nn.Linear(dim, dim)
        self.recalibrate_cond = nn.Linear(dim, dim)

    def forward(self, flow_tokens: torch.Tensor, cond_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t_f, t_c = self.norm_flow(flow_tokens), self.norm_cond(cond_tokens)
        cues = {"agreement": t_f * t_c, "difference": (t_f - t_c).abs(), "residual": t_f - t_c}  # Eq. 11
        t_z = self.fuse(torch.cat([self.encode[name](cue) for name, cue in cues.items()], dim=-1))
        return t_f * torch.sigmoid(self.recalibrate_flow(t_z)), t_c * torch.sigmoid(self.recalibrate_cond(t_z))


class TimeConditionedBlock(nn.Module):
    """A transformer block whose layer norms are modulated by the time embedding (adaLN-Zero, as in DiT).

    The modulation starts at zero, so a fresh block is the identity.
    """

    def __init__(self, dim: int, heads: int, time_dim: int):
        super().__init__()
        self.norm_attention = nn.LayerNorm(dim, elementwise_affine=False)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.modulation = nn.Linear(time_dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(temb))[:, None, :].chunk(6, dim=-1)
        h = self.norm_attention(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attention(h, h, h, need_weights=False)[0]
        h = self.norm_mlp(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class NeuralModulator(nn.Module):
    """Fig. 2(c): [T_F, T~_f, T~_c] -> R time-conditioned blocks -> modulation mask M in (-1, 1).

    The three token sets are concatenated per token and projected to one; tanh bounds the mask so the gate of
    Eq. 12, 1 + M, stays in (0, 2). The last projection starts at zero: M = 0 and Eq. 12 is the identity at start.
    """

    def __init__(self, dim: int, heads: int, time_dim: int, blocks: int):
        super().__init__()
        self.merge = nn.Linear(3 * dim, dim)
        self.blocks = nn.ModuleList(TimeConditionedBlock(dim, heads, time_dim) for _ in range(blocks))
        self.norm = nn.LayerNorm(dim)
        self.to_mask = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_mask.weight)
        nn.init.zeros_(self.to_mask.bias)

    def forward(self, t_spectral: torch.Tensor, t_flow: torch.Tensor, t_cond: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.merge(torch.cat([t_spectral, t_flow, t_cond], dim=-1))
        for block in self.blocks:
            h = block(h, temb)
        return torch.tanh(self.to_mask(self.norm(h)))


class FrequencyAwareAttention(nn.Module):
    """One FA-Attention layer: refines the bottleneck condition feature c^n using the flow feature f, c^n -> c^{n+1}.

    Spectral branch: FFT of f and c^n, FiLM(t), patch embedding, positional encoding -> T^_f, T^_c;
    Eq. 10  T^_F = CrossAttn(T^_c, T^_f)  (condition tokens are the queries).
    Spatial-token branch: FiLM(t) and patch embedding of f and c^n -> T_f, T_c -> TD-X (Eq. 11) -> T~_f, T~_c.
    Eq. 12  T^_C^1 = T^_F . (1 + M^0),  M^0 = NeuralModulator(T^_F, T~_f, T~_c, t).
    Inverse patch embedding and IFFT give the refinement.

    Choices where the paper is silent: the cross-attention is pre-norm with a residual on the queries (without it
    the refined condition would be built from flow values alone, losing the condition it is meant to refine); the
    layer is residual, c^{n+1} = c^n + IFFT(...); FiLM of both streams is conditioned on the time embedding.
    """

    def __init__(self, channels: int, dim: int, heads: int, patch: int, time_dim: int, modulator_blocks: int):
        super().__init__()
        self.patch = patch
        self.spectral_flow = PatchTokens(2 * channels, dim, patch, time_dim)
        self.spectral_cond = PatchTokens(2 * channels, dim, patch, time_dim)
        self.spatial_flow = PatchTokens(channels, dim, patch, time_dim)
        self.spatial_cond = PatchTokens(channels, dim, patch, time_dim)
        self.norm_query = nn.LayerNorm(dim)
        self.norm_key = nn.LayerNorm(dim)
        self.cross_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.discrepancy = TokenDiscrepancyExtractor(dim)
        self.modulator = NeuralModulator(dim, heads, time_dim, modulator_blocks)
        self.unembed = nn.ConvTranspose2d(dim, 2 * channels, patch, stride=patch)

    def forward(self, flow: torch.Tensor, cond: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        height, width = flow.shape[-2] // self.patch, flow.shape[-1] // self.patch
        position = positional_encoding(self.norm_query.normalized_shape[0], height, width, flow.device).to(flow.dtype)
        t_hat_f = self.spectral_flow(spectrum(flow), temb) + position
        t_hat_c = self.spectral_cond(spectrum(cond), temb) + position
        query, key = self.norm_query(t_hat_c), self.norm_key(t_hat_f)
        t_hat_big_f = t_hat_c + self.cross_attention(query, key, key, need_weights=False)[0]  # Eq. 10
        t_tilde_f, t_tilde_c = self.discrepancy(self.spatial_flow(flow, temb), self.spatial_cond(cond, temb))  # Eq. 11
        mask = self.modulator(t_hat_big_f, t_tilde_f, t_tilde_c, temb)
        t_hat_c1 = t_hat_big_f * (1 + mask)  # Eq. 12
        grid = t_hat_c1.transpose(1, 2).reshape(flow.shape[0], -1, height, width)
        return cond + inverse_spectrum(self.unembed(grid))
