"""Alignment Regularization (AR) of the image-mask alignment "free lunch" paper, Section 3.2, in flow-matching form.

The paper (a DDPM) noises the image latent z_0 and the mask latent h_0 = E(m) with the *same* noise eps (Eq. 2),
denoises both with the shared network conditioned on the mask (Eq. 3; the mask through its own head) and
penalises the difference of the two noise predictions (Eq. 4), L_gen = L_sd + alpha L_al (Eq. 5).

Here the model predicts a velocity, not the noise. With x_t = t x1 + (1 - t) eps and the target v = x1 - eps
(flow_matching, Eq. 1-2):

    x_t = t x1 + (1 - t) eps = t (eps + v) + (1 - t) eps = eps + t v     =>     eps = x_t - t v,

so a predicted velocity v_hat gives the predicted noise eps_hat = x_t - t v_hat, exact for every t (no division,
so no blow-up near t = 0 or 1). With the image x_t = t x1 + (1 - t) eps and the mask h_t = t h1 + (1 - t) eps:

    eps_z = x_t - t v_theta(x_t, t, c_m)            (image head)
    eps_h = h_t - t v_theta^mask(h_t, t, c_m)       (mask head)
    L_AR  = E || eps_z - eps_h ||^2                 (free-lunch Eq. 4)

and stage 1 minimises L_D + w_ar L_AR (Eq. 5). Gradients flow into both heads and the shared body. Samples whose
condition is dropped for classifier-free guidance have no mask to agree with; they are left out of L_AR.
Only the image head is used at generation.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from alignflow.flow_matching import interpolate
from alignflow.generator.model import AlignFlowGenerator
from alignflow.runs.loop import StepTimer


def predicted_noise(x_t: torch.Tensor, t: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """eps_hat = x_t - t v_hat (derivation in the module docstring)."""
    return x_t - t.view(-1, *([1] * (x_t.dim() - 1))) * velocity


def alignment_regularization(eps_image: torch.Tensor, eps_mask: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Free-lunch Eq. 4: mean squared difference of the two noise predictions over the samples in ``keep``."""
    per_sample = (eps_image.float() - eps_mask.float()).square().flatten(1).mean(dim=1)
    if keep is None:
        return per_sample.mean()
    weights = keep.to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp_min(1.0)


def denoising_with_alignment_regularization(
    model: AlignFlowGenerator,
    x1: torch.Tensor,
    mask_latents: torch.Tensor,
    *,
    cond_dropout: float = 0.0,
    generator: torch.Generator | None = None,
    timer: StepTimer | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_D, L_AR) from one draw of (eps, t): the image branch gives both the denoising loss (Eq. 1) and eps_z; the
    mask latents ``mask_latents`` are noised with the same eps and t and denoised by the mask head for eps_h.

    ``timer`` (the run's per-phase timer) gets the forward time of each branch.
    """
    batch = x1.shape[0]
    eps = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    t = torch.rand(batch, generator=generator, device=x1.device, dtype=x1.dtype)
    keep = torch.rand(batch, generator=generator, device=x1.device) >= cond_dropout
    started = time.perf_counter()
    x_t = interpolate(x1, eps, t)
    v_image = model.velocity(x_t, t, mask_latents, keep)
    denoising = F.mse_loss(v_image.float(), (x1 - eps).float())  # Eq. 1, as flow_matching.denoising_loss
    if timer is not None:
        timer.add("denoising_forward", time.perf_counter() - started)
    started = time.perf_counter()
    h_t = interpolate(mask_latents, eps, t)  # the same eps and t as the image (free-lunch Eq. 2)
    v_mask = model.velocity(h_t, t, mask_latents, head="mask")
    regularization = alignment_regularization(predicted_noise(x_t, t, v_image), predicted_noise(h_t, t, v_mask), keep)
    if timer is not None:
        timer.add("ar_mask_branch_forward", time.perf_counter() - started)
    return denoising, regularization
