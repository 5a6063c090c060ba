"""The alignment loss L_A = -r_align (Eq. 6): features of generated images against fixed reference features."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from alignflow.errors import InputError
from alignflow.rewards.mmd import mmd_unbiased
from alignflow.rewards.skl import symmetric_kl

SINGLE_REFERENCE_WARNING = (
    "Only one reference image: the alignment target is estimated from augmented views of a single image and is "
    "unreliable (AlignFlow paper, Table 4). Use 5-10 references where you can."
)


def augment_single_reference(image: torch.Tensor, views: int = 8, seed: int = 0) -> torch.Tensor:
    """Flips and random resized crops of one reference [1, 3, H, W], so the unbiased MMD has >= 2 samples per side."""
    generator = torch.Generator().manual_seed(seed)
    _, _, height, width = image.shape
    out = [image, image.flip(-1)]
    while len(out) < views:
        scale = 0.7 + 0.3 * torch.rand(1, generator=generator).item()
        h, w = max(2, int(height * scale)), max(2, int(width * scale))
        top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        crop = image[:, :, top : top + h, left : left + w]
        crop = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
        out.append(crop.flip(-1) if len(out) % 2 else crop)
    return torch.cat(out[:views])


class AlignmentReward(nn.Module):
    """Scores generated images against a fixed reference set with a frozen feature encoder.

    The reference features are computed once; only the generated side carries gradients.
    """

    def __init__(self, encoder: nn.Module, references: torch.Tensor, kind: str = "mmd", batch_size: int = 16):
        super().__init__()
        if kind not in ("mmd", "skl"):
            raise InputError("reward", "'mmd' or 'skl'", repr(kind))
        if references.shape[0] < 1:
            raise InputError("references", "at least 1 reference image", "0")
        if references.shape[0] == 1:
            warnings.warn(SINGLE_REFERENCE_WARNING, stacklevel=2)
            references = augment_single_reference(references)
        self.encoder = encoder
        self.kind = kind
        with torch.no_grad():
            features = [encoder(chunk) for chunk in references.split(batch_size)]
        self.register_buffer("reference_features", torch.cat(features).float())

    def forward(self, generated_images: torch.Tensor) -> torch.Tensor:
        """L_A for a batch of generated images in [0, 1]; differentiable with respect to them."""
        return self.distance(self.encoder(generated_images))

    def distance(self, generated_features: torch.Tensor) -> torch.Tensor:
        if self.kind == "skl":
            return symmetric_kl(generated_features, self.reference_features)
        return mmd_unbiased(generated_features, self.reference_features)
