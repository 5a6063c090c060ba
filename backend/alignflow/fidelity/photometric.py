"""Strong photometric augmentation (colour, contrast, blur, noise) with MONAI's array transforms.

A segmenter trained on source images alone should not depend on the source look: the reward segmenter must not
punish the target look that stage 2 aligns to, and the source-only evaluator has to work on target-looking images.
Per-channel gain and offset give colour casts (MONAI has no colour-jitter transform), gamma changes the contrast,
Gaussian smoothing and noise imitate other optics and sensors. Geometry is left alone: the mask stays valid.
"""

from __future__ import annotations

import torch


def photometric_transform(seed: int = 0):
    """A seeded MONAI ``Compose`` acting on one image [3, H, W] in [0, 1]."""
    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandGaussianNoise,
        RandGaussianSmooth,
        RandScaleIntensity,
        RandShiftIntensity,
    )

    transform = Compose([
        RandScaleIntensity(factors=0.35, prob=0.8, channel_wise=True),  # x (1 + f), f ~ U(-0.35, 0.35) per channel
        RandShiftIntensity(offsets=0.12, prob=0.8, channel_wise=True),
        RandAdjustContrast(prob=0.6, gamma=(0.5, 2.0)),
        RandGaussianSmooth(sigma_x=(0.3, 1.5), sigma_y=(0.3, 1.5), prob=0.3),
        RandGaussianNoise(prob=0.3, std=0.05),
    ])
    transform.set_random_state(seed=seed)
    return transform


def augment_photometric(transform, images: torch.Tensor) -> torch.Tensor:
    """Each image [3, H, W] of the batch gets its own random draw; the result is clamped to [0, 1]."""
    from monai.utils import convert_to_tensor

    out = [convert_to_tensor(transform(image), track_meta=False).float() for image in images]
    return torch.stack(out).clamp_(0.0, 1.0)
