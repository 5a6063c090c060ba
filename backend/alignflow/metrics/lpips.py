"""Shift-tolerant LPIPS (Ghildyal & Liu, ECCV 2022), AlexNet variant: a perceptual distance between image pairs.

NOT the standard LPIPS of Zhang et al. (2018): the backbone is an anti-aliased AlexNet (stride-1 first convolution,
blur-pool downsampling) trained to ignore small shifts, so its values are not comparable with published LPIPS
numbers. The standard metric (torchmetrics / the lpips package) needs torchvision, which does not install with this
CPU torch; the network is defined here (about 40 lines) and loads the authors' full metric weights strictly.

d(x, y) = sum_l mean_hw( w_l . (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|)^2 )   (LPIPS, Eq. 1), over the five ReLU taps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alignflow.errors import InputError

WEIGHTS_NAME = "stlpips_alex_shift_tolerant"
CHANNELS = (64, 192, 384, 256, 256)


class BlurPool(nn.Module):
    """Reflect-pad by 2, blur with the binomial [1, 2, 1] x [1, 2, 1] / 16 filter, keep every second pixel."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("filt", (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class ShiftTolerantAlexNet(nn.Module):
    """The five feature slices; module indices match the released state dict (``slice2.5.weight`` etc.)."""

    def __init__(self) -> None:
        super().__init__()
        self.slice1 = nn.Sequential()
        self.slice1.add_module("0", nn.Conv2d(3, 64, 11, stride=1, padding=2))
        self.slice1.add_module("1", BlurPool(64))
        self.slice1.add_module("2", nn.ReLU())
        self.slice2 = nn.Sequential()
        self.slice2.add_module("3", nn.MaxPool2d(3, stride=1))
        self.slice2.add_module("4", BlurPool(64))
        self.slice2.add_module("5", nn.Conv2d(64, 192, 5, padding=2))
        self.slice2.add_module("6", nn.ReLU())
        self.slice3 = nn.Sequential()
        self.slice3.add_module("7", nn.MaxPool2d(3, stride=1))
        self.slice3.add_module("8", BlurPool(192))
        self.slice3.add_module("9", nn.Conv2d(192, 384, 3, padding=1))
        self.slice3.add_module("10", nn.ReLU())
        self.slice4 = nn.Sequential()
        self.slice4.add_module("11", nn.Conv2d(384, 256, 3, padding=1))
        self.slice4.add_module("12", nn.ReLU())
        self.slice5 = nn.Sequential()
        self.slice5.add_module("13", nn.Conv2d(256, 256, 3, padding=1))
        self.slice5.add_module("14", nn.ReLU())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for block in (self.slice1, self.slice2, self.slice3, self.slice4, self.slice5):
            x = block(x)
            taps.append(x)
        return taps


class _LinearHead(nn.Module):
    """w_l: a 1x1 convolution to one channel; index 1 because the release had a dropout at index 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ShiftTolerantLPIPS(nn.Module):
    """``forward(x, y)``: per-pair distance [N] for RGB images [N, 3, H, W] in [0, 1] (0 for identical images)."""

    def __init__(self) -> None:
        super().__init__()
        from alignflow.weights import load_state_dict

        self.register_buffer("shift", torch.zeros(1, 3, 1, 1))  # the "scaling layer": ImageNet-like input statistics
        self.register_buffer("scale", torch.ones(1, 3, 1, 1))
        self.net = ShiftTolerantAlexNet()
        self.lins = nn.ModuleList(_LinearHead(c) for c in CHANNELS)
        self.load_state_dict({_our_key(key): value for key, value in load_state_dict(WEIGHTS_NAME).items()}, strict=True)
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise InputError("LPIPS images", "two RGB batches [N, 3, H, W] of the same shape",
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < 32:
            raise InputError("LPIPS images", "images at least 32 pixels on each side", f"{tuple(x.shape[-2:])}")
        features_x = self.net(self._prepare(x))
        features_y = self.net(self._prepare(y))
        distance = torch.zeros(x.shape[0], device=x.device)
        for head, fx, fy in zip(self.lins, features_x, features_y):
            difference = (_unit(fx) - _unit(fy)) ** 2
            distance = distance + head(difference).mean(dim=(1, 2, 3))
        return distance

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> [-1, 1] (the range LPIPS was trained on) -> the scaling layer."""
        return ((images.float() * 2.0 - 1.0) - self.shift) / self.scale


def _our_key(released: str) -> str:
    """Released names -> ours: ``scaling_layer.shift`` -> ``shift``, ``lin3.model.1.weight`` -> ``lins.3.model.1.weight``."""
    if released.startswith("scaling_layer."):
        return released.removeprefix("scaling_layer.")
    if released.startswith("lin"):
        return "lins." + released.removeprefix("lin")
    return released


def _unit(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise along channels (LPIPS Eq. 1's f / |f|)."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
