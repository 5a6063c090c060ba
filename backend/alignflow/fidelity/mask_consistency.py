"""The mask-consistency loss L_M of stage 2: L = L_D + w_align L_A + w_mask L_M.

A frozen segmenter segments the decoded one-step estimate x0_hat that the alignment reward already decodes
(Algorithm 1, line 17), so L_M costs one segmenter pass and no extra sampling; L_M is its Dice + cross-entropy
against the masks that conditioned those images (MONAI ``DiceCELoss``; for two classes the softmax cross-entropy
equals the binary cross-entropy of the logit difference). This is the pixel-level cycle-consistency reward of
ControlNet++ (Li et al., "ControlNet++: Improving Conditional Controls with Efficient Consistency Feedback",
ECCV 2024), which also scores a one-step estimate instead of a full sample.

The segmenter is trained on source images with strong photometric augmentation (``alignflow train-evaluator
--role reward``), so it does not punish the target look that L_A pulls towards. Its weights are frozen; the
gradient reaches the generator only through the images.
"""

from __future__ import annotations

import torch
from torch import nn

from alignflow.errors import InputError
from alignflow.fidelity.metric import to_segmenter_resolution
from alignflow.fidelity.segmenter import Segmenter


class MaskConsistencyReward(nn.Module):
    """L_M(images, masks): images [N, 3, H, W] in [0, 1] (differentiable), class-id masks [N, H, W]."""

    def __init__(self, segmenter: Segmenter):
        super().__init__()
        from monai.losses import DiceCELoss

        self.segmenter = segmenter.eval().requires_grad_(False)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

    @property
    def num_classes(self) -> int:
        return self.segmenter.config.num_classes

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
            raise InputError("masks", f"one mask per image of size {tuple(images.shape[-2:])}", f"{tuple(masks.shape)}")
        if masks.numel() and int(masks.max()) >= self.num_classes:
            raise InputError("masks", f"class ids below {self.num_classes} (the mask segmenter's classes)", f"id {int(masks.max())}")
        images, masks = to_segmenter_resolution(images.float(), masks, self.segmenter.config.resolution)
        logits = self.segmenter(images)
        return self.loss(logits.float(), masks.long().unsqueeze(1))
