"""Flow matching as AlignFlow uses it: the denoising loss, Euler sampling and partially tunable inference.

Notation of the paper: t = 0 is Gaussian noise, t = 1 is data; x_t = t x1 + (1 - t) eps (Eq. 2); the target
velocity is x1 - eps (Eq. 1, 16). The integrator is written out (Eq. 4, 14) rather than taken from diffusers'
FlowMatchEulerDiscreteScheduler because stage 2 needs to stop the trajectory at an arbitrary step k, switch
gradients on for exactly one step and take a jump of size 1 - s (Eq. 5), which the scheduler's step() API does not
expose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


class VelocityModel(Protocol):
    """What the flow needs of a model: v(x_t, t, condition) with classifier-free guidance (the image and mask
    generators both provide it)."""

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None = None,
                 keep: torch.Tensor | None = None) -> torch.Tensor: ...

    def guided_velocity(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None,
                        guidance_scale: float) -> torch.Tensor: ...


def sample_noise(count: int, shape: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
    """One generator per sample, so sample i depends only on its seed, not on the batch it falls in."""
    return torch.stack([torch.randn(*shape, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds[:count]])


def interpolate(x1: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq. 2: x_t = t x1 + (1 - t) eps."""
    t = t.view(-1, *([1] * (x1.dim() - 1)))
    return t * x1 + (1.0 - t) * eps


def denoising_loss(
    model: VelocityModel,
    x1: torch.Tensor,
    mask_latents: torch.Tensor,
    *,
    cond_dropout: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Eq. 1: L_D = E ||v_theta(x_t, t, c_m, c_p) - (x1 - eps)||^2 with t ~ U(0, 1).

    ``cond_dropout`` drops the condition (null prompt, no ControlNet) for that fraction of the batch, which trains
    the unconditional branch classifier-free guidance needs.
    """
    batch = x1.shape[0]
    eps = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    t = torch.rand(batch, generator=generator, device=x1.device, dtype=x1.dtype)
    keep = torch.rand(batch, generator=generator, device=x1.device) >= cond_dropout
    prediction = model.velocity(interpolate(x1, eps, t), t, mask_latents, keep)
    return F.mse_loss(prediction.float(), (x1 - eps).float())


@torch.no_grad()
def euler_sample(
    model: VelocityModel,
    noise: torch.Tensor,
    mask_latents: torch.Tensor,
    *,
    num_steps: int = 28,
    guidance_scale: float = 1.0,
    start_step: int = 0,
) -> torch.Tensor:
    """Eq. 14: x_{t+dt} = x_t + dt v(x_t, t), from t = 0 (noise) to t = 1 (data).

    With ``start_step`` > 0, ``noise`` is a point x_s already on the way (s = start_step / num_steps), e.g. a real
    sample noised by Eq. 2, and only the remaining steps run (SDEdit-style variations).
    """
    x = noise
    dt = 1.0 / num_steps
    for step in range(start_step, num_steps):
        t = torch.full((x.shape[0],), step * dt, device=x.device, dtype=x.dtype)
        x = x + dt * model.guided_velocity(x, t, mask_latents, guidance_scale)
    return x


@dataclass
class TunableInference:
    """Result of one partially tunable inference: the differentiable x0_hat and where the trajectory stopped."""

    x0_hat: torch.Tensor
    start_index: int
    s: float


def partially_tunable_inference(
    model: VelocityModel,
    frozen_model: VelocityModel,
    noise: torch.Tensor,
    mask_latents: torch.Tensor,
    start_index: int,
    *,
    num_steps: int = 20,
) -> TunableInference:
    """Algorithm 1, lines 9-16: frozen Euler steps from noise up to s = k dt, then one tunable jump to t = 1.

    The k = ``start_index`` steps run under no_grad with ``frozen_model`` (Eq. 4; v_theta* in the paper, which may be
    the very same module as ``model``: the current weights, frozen for these steps). Only the last step (Eq. 5),
    x0_hat = x_s + (1 - s) v_theta(x_s, s), is on the autograd graph, so memory stays close to one training step.
    """
    x_s = frozen_euler(frozen_model, noise, mask_latents, start_index, num_steps=num_steps)
    s = start_index / num_steps
    return TunableInference(x0_hat=tunable_jump(model, x_s, s, mask_latents), start_index=start_index, s=s)


@torch.no_grad()
def frozen_euler(
    frozen_model: VelocityModel, noise: torch.Tensor, mask_latents: torch.Tensor, steps: int, *, num_steps: int = 20,
    start_step: int = 0,
) -> torch.Tensor:
    """Eq. 4: Euler steps of size 1/num_steps with v_theta* up to step ``steps`` (t = steps / num_steps), keeping no
    autograd graph. From noise, or with ``start_step`` > 0 from a point x_t0 already on the way (t0 = start_step /
    num_steps; stage 2 in translation mode starts from a noised real latent there)."""
    dt = 1.0 / num_steps
    x = noise
    for step in range(start_step, steps):
        t = torch.full((x.shape[0],), step * dt, device=x.device, dtype=x.dtype)
        x = x + dt * frozen_model.velocity(x, t, mask_latents)
    return x


def tunable_jump(model: VelocityModel, x_s: torch.Tensor, s: float, mask_latents: torch.Tensor) -> torch.Tensor:
    """Eq. 5: x0_hat = x_s + (1 - s) v_theta(x_s, s), the one step that carries gradients."""
    s_vector = torch.full((x_s.shape[0],), s, device=x_s.device, dtype=x_s.dtype)
    return x_s + (1.0 - s) * model.velocity(x_s, s_vector, mask_latents)
