"""Generative Feedback (GF) of the image-mask alignment "free lunch" paper, Section 3.3, in flow-matching form.

A trained mask-conditioned generator judges a segmenter's prediction: the prediction, turned into a soft mask,
conditions the generator, which must denoise the real image. A mask that matches the image lets the generator
reconstruct it; a wrong one does not, and the denoising error flows back into the segmenter.

    l = f(x)                                        segmenter logits [N, C, H, W]           (Eq. 7)
    m~ = softmax(l / lambda)                        temperature lambda in (0, 1]            (Eq. 8)
    m~ = m~[:, 1]                                   the foreground probability (C = 2)      (Eq. 9)
    L_fb = E || eps - eps_fb(z_t, t, E(m~)) ||^2    the generator's noise prediction        (Eq. 10)
    L_seg = L_ce + w_fb L_fb                        (the paper: w_fb = 1, Dice + CE here)   (Eq. 11)

Masks enter the generator as a grey image (``data.mask_to_rgb``: class k -> grey k / (C - 1)); for C classes the
soft version is the expected grey level sum_k p_k k / (C - 1), which for two classes is Eq. 9's m~[:, 1] exactly and
for a one-hot prediction is the hard mask's image. The generator predicts a velocity, not the noise; the noise
prediction is eps_fb = x_t - t v (derivation in ``training/alignment_regularization.py``). The generator and the
autoencoder are frozen: only the segmenter learns from L_fb, through the mask encoder and the ControlNet.

Nothing in diffusers or MONAI conditions a generator on a differentiable segmenter output, so this is written here.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from alignflow.downstream.config import check_feedback_temperature
from alignflow.errors import InputError
from alignflow.flow_matching import interpolate
from alignflow.generator.alignment_regularization import predicted_noise


def soft_mask_image(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 8-9 for C classes: the expected grey level of softmax(logits / temperature), as a [N, 3, H, W] image."""
    probabilities = torch.softmax(logits.float() / temperature, dim=1)
    levels = torch.arange(logits.shape[1], device=logits.device, dtype=probabilities.dtype) / (logits.shape[1] - 1)
    grey = (probabilities * levels.view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
    return grey.expand(-1, 3, -1, -1)


class GenerativeFeedback(nn.Module):
    """L_fb (Eq. 10) of a segmenter's logits for the images they were predicted from, judged by a frozen generator."""

    def __init__(self, generator: Any, temperature: float = 1.0):
        """``generator``: a ``generation.LoadedGenerator`` (frozen, eval mode)."""
        super().__init__()
        check_feedback_temperature(temperature)
        self.model = generator.model.eval().requires_grad_(False)
        self.codec = generator.codec.eval().requires_grad_(False)
        self.temperature = float(temperature)
        self.resolution = generator.config.resolution
        self.num_classes = generator.config.num_classes

    def check_compatible(self, resolution: int, num_classes: int, where: str) -> None:
        """The segmenter's images and classes must be the generator's (a clear error naming ``where`` otherwise)."""
        if resolution != self.resolution:
            raise InputError(where, f"a generator trained at the segmenter's resolution {resolution} px", f"{self.resolution} px")
        if num_classes != self.num_classes:
            raise InputError(where, f"a generator of {num_classes} mask classes (as the training masks)", f"{self.num_classes} classes")

    def forward(self, images: torch.Tensor, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``images`` [N, 3, R, R] in [0, 1], ``logits`` [N, C, R, R] the segmenter's for them; returns L_fb."""
        with torch.no_grad():
            x1 = self.codec.encode_images(images)
        mask_latents = self.codec.normalise_masks(self.codec.autoencoder.encode(soft_mask_image(logits, self.temperature)))
        eps = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        t = torch.rand(x1.shape[0], generator=generator, device=x1.device, dtype=x1.dtype)
        x_t = interpolate(x1, eps, t)
        eps_fb = predicted_noise(x_t, t, self.model.velocity(x_t, t, mask_latents))
        return F.mse_loss(eps_fb.float(), eps.float())
