"""Conditional flow matching on label maps: the probability path (Eq. 1), the loss (Eq. 3-5) and Euler sampling.

Labels are encoded as signed one-hot maps, x1 = 2 onehot(mask) - 1 in {-1, +1}^K (K channels including the
background, for binary masks too), so the target has the scale of the N(0, 1) prior and a sample is decoded by
argmax over channels, which works for any number of classes. The interpolation is written out here (three lines)
rather than imported from :mod:`alignflow.flow_matching`, whose module imports the SD3 generator and
would add seconds to every start of the segmenter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from alignflow.data import one_hot
from alignflow.segmentation.model import ConditionFeatures, MedFlowSeg


def encode_labels(mask_ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids [B, H, W] -> x1 in {-1, +1}, [B, K, H, W]."""
    return one_hot(mask_ids, num_classes) * 2.0 - 1.0


def decode_labels(x1: torch.Tensor) -> torch.Tensor:
    """A (sampled) label map [B, K, H, W] -> class ids [B, H, W] (uint8)."""
    return x1.argmax(dim=1).to(torch.uint8)


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq. 1: x_t = (1 - t) x0 + t x1, from noise x0 (t = 0) to the label x1 (t = 1); u_t = x1 - x0."""
    t = t.view(-1, *([1] * (x1.dim() - 1)))
    return (1.0 - t) * x0 + t * x1


def dice_loss(logits: torch.Tensor, mask_ids: torch.Tensor) -> torch.Tensor:
    """Multi-class soft Dice loss, 1 - mean over classes (background included) of the batch-wise soft Dice.

    Written here because torchmetrics' Dice is a metric on hard labels, not a differentiable loss. Batch-wise sums
    keep a class that is absent from one image from dividing by ~0.
    """
    probabilities = logits.float().softmax(dim=1)
    target = one_hot(mask_ids, logits.shape[1])
    dims = (0, 2, 3)
    intersection = (probabilities * target).sum(dims)
    total = probabilities.sum(dims) + target.sum(dims)
    return 1.0 - ((2.0 * intersection + 1.0) / (total + 1.0)).mean()


def medflowseg_loss(
    model: MedFlowSeg,
    images: torch.Tensor,
    mask_ids: torch.Tensor,
    *,
    lambda_aux: float = 0.1,
    alpha_ce: float = 10.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Eq. 5: L_total = L_vel + lambda L_aux, with L_vel = E ||u^_t - (x1 - x0)||_1 (Eq. 3) and
    L_aux = L_dice + alpha L_ce on the Condition Network's head (Eq. 4); t ~ U(0, 1), x0 ~ N(0, I).

    The L1 norm is averaged over pixels and channels (F.l1_loss), so lambda = 0.1 and alpha = 10 weigh terms of
    comparable scale whatever the image size. Returns all terms; ``"loss"`` is the one to minimise.
    """
    x1 = encode_labels(mask_ids, model.config.num_classes).to(images.dtype)
    x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    t = torch.rand(x1.shape[0], generator=generator, device=x1.device, dtype=x1.dtype)
    velocity, aux_logits = model(interpolate(x0, x1, t), t, images)
    loss_vel = F.l1_loss(velocity.float(), (x1 - x0).float())  # Eq. 3
    loss_dice = dice_loss(aux_logits, mask_ids)
    loss_ce = F.cross_entropy(aux_logits.float(), mask_ids.long())
    loss_aux = loss_dice + alpha_ce * loss_ce  # Eq. 4
    return {"loss": loss_vel + lambda_aux * loss_aux, "loss_vel": loss_vel, "loss_aux": loss_aux,
            "loss_dice": loss_dice, "loss_ce": loss_ce}


@torch.no_grad()
def euler_sample(
    model: MedFlowSeg,
    cond: ConditionFeatures,
    x0: torch.Tensor,
    num_steps: int = 50,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = u^_t from t = 0 (noise x0) to t = 1 with ``num_steps`` Euler steps: x_{t+dt} = x_t + dt u^_t."""
    x = x0
    dt = 1.0 / num_steps
    for step in range(num_steps):
        t = torch.full((x.shape[0],), step * dt, device=x.device, dtype=x.dtype)
        x = x + dt * model.velocity(x, t, cond).to(x.dtype)
        if on_step is not None:
            on_step(step + 1)
    return x
