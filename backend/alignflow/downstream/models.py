"""The downstream segmenters trained by this package: the plain UNet (the mask-fidelity evaluator's MONAI UNet) and
SegFormer (transformers ``SegformerForSemanticSegmentation``, randomly initialised). Both take images [N, 3, R, R] in
[0, 1] and return class logits [N, C, R, R]; both are saved as safetensors + JSON (``segmenter.json``).

MedFlowSeg, the third model of ``evaluate-segmentation``, has its own trainer and folder (``alignflow.segmentation``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from alignflow.config import DictConfig
from alignflow.errors import InputError
from alignflow.fidelity.segmenter import ROLE_DEFAULTS, Segmenter, SegmenterConfig
from alignflow.runs.checkpoint import MODEL_FILE, load_state_dict_strict, read_model_folder, save_model_folder

MODEL_DIR = "model"
MODEL_CONFIG_FILE = "segmenter.json"
MODEL_KIND = "downstream-segmenter"  # written into the folder's info


@dataclass
class SegformerSegmenterConfig(DictConfig):
    """A SegFormer from scratch. The defaults are MiT-b0's encoder (3.7 M parameters with the decode head)."""

    config_name = "segformer config"
    validate_on_load = True

    num_classes: int = 2
    resolution: int = 128
    hidden_sizes: list[int] = field(default_factory=lambda: [32, 64, 160, 256])
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    num_attention_heads: list[int] = field(default_factory=lambda: [1, 2, 5, 8])
    sr_ratios: list[int] = field(default_factory=lambda: [8, 4, 2, 1])
    decoder_hidden_size: int = 256
    drop_path_rate: float = 0.1

    def validate(self) -> None:
        if self.num_classes < 2:
            raise InputError("segformer.num_classes", "at least 2 (background + one class)", str(self.num_classes))
        lists = (self.hidden_sizes, self.depths, self.num_attention_heads, self.sr_ratios)
        if len({len(values) for values in lists}) != 1 or min(min(values) for values in lists) < 1:
            raise InputError("model_options", "hidden_sizes, depths, num_attention_heads and sr_ratios: positive, one per stage",
                             repr([list(values) for values in lists]))
        if any(width % heads for width, heads in zip(self.hidden_sizes, self.num_attention_heads)):
            raise InputError("model_options.num_attention_heads", f"divisors of hidden_sizes {self.hidden_sizes}", repr(self.num_attention_heads))
        stride = 4 * 2 ** (len(self.hidden_sizes) - 1)
        if self.resolution < stride:
            raise InputError("resolution", f"at least {stride} px for a {len(self.hidden_sizes)}-stage SegFormer", str(self.resolution))


class SegformerSegmenter(nn.Module):
    """Images [N, 3, R, R] in [0, 1] -> class logits [N, C, R, R]; SegFormer predicts at 1/4 of the input size,
    so its logits are upsampled bilinearly (as SegFormer's own evaluation does) before the loss and the argmax."""

    def __init__(self, config: SegformerSegmenterConfig):
        super().__init__()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        config.validate()
        self.config = config
        stages = len(config.hidden_sizes)
        self.net = SegformerForSemanticSegmentation(SegformerConfig(
            num_labels=config.num_classes, num_encoder_blocks=stages, hidden_sizes=list(config.hidden_sizes),
            depths=list(config.depths), num_attention_heads=list(config.num_attention_heads), sr_ratios=list(config.sr_ratios),
            patch_sizes=[7] + [3] * (stages - 1), strides=[4] + [2] * (stages - 1), mlp_ratios=[4] * stages,
            decoder_hidden_size=config.decoder_hidden_size, drop_path_rate=config.drop_path_rate))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net(pixel_values=images * 2.0 - 1.0).logits
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Class ids [N, R, R]."""
        return torch.cat([self(chunk).argmax(dim=1) for chunk in images.split(batch_size)])

    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def load_saved_state_dict(self, state: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
        load_state_dict_strict(self, state, where, f"weights of a SegFormer with hidden sizes {self.config.hidden_sizes} and "
                                                   f"{self.config.num_classes} classes")


DownstreamModel = Segmenter | SegformerSegmenter


def build_model(name: str, num_classes: int, resolution: int, options: dict[str, Any]) -> DownstreamModel:
    """The named network with its defaults, overridden by ``options`` (unknown option names are rejected)."""
    if name == "unet":
        values = {**ROLE_DEFAULTS["evaluator"], **options, "num_classes": num_classes, "resolution": resolution}
        return Segmenter(SegmenterConfig.from_dict(values, "model_options"))
    if name == "segformer":
        values = {**options, "num_classes": num_classes, "resolution": resolution}
        return SegformerSegmenter(SegformerSegmenterConfig.from_dict(values, "model_options"))
    raise InputError("--model", "unet or segformer (MedFlowSeg trains with alignflow.segmentation)", repr(name))


FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-1, -2))  # identity, horizontal, vertical, both


@torch.no_grad()
def predict_labels(model: nn.Module, images: torch.Tensor, batch_size: int = 16, test_time_flips: bool = False) -> torch.Tensor:
    """Class ids [N, R, R]. With ``test_time_flips`` the class probabilities are averaged over the image and its
    horizontal, vertical and double flip (each flipped back) before the argmax: test-time augmentation, which removes
    part of a single network's orientation-specific errors and with them part of the seed-to-seed spread."""
    if not test_time_flips:
        return model.predict(images, batch_size)
    labels = []
    for chunk in images.split(batch_size):
        probabilities = sum(_flip(model(_flip(chunk, dims)).softmax(dim=1), dims) for dims in FLIPS)
        labels.append(probabilities.argmax(dim=1))
    return torch.cat(labels)


def _flip(tensor: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return tensor.flip(dims) if dims else tensor


def save_model(folder: Path, name: str, model: DownstreamModel, info: dict[str, Any]) -> Path:
    return save_model_folder(folder, model, {"network": name, **model.config.to_dict()}, {"model": MODEL_KIND, **info}, MODEL_CONFIG_FILE)


def load_model(folder: str | Path, device: torch.device | str = "cpu") -> tuple[DownstreamModel, dict[str, Any]]:
    """A trained downstream UNet or SegFormer (its folder or the evaluation's output folder), frozen, eval mode."""
    values, weights, info, folder = read_model_folder(
        Path(folder), config_file=MODEL_CONFIG_FILE, subfolder=MODEL_DIR,
        expected=f"a model folder of `alignflow evaluate-segmentation` ({MODEL_CONFIG_FILE} + {MODEL_FILE}) or its output folder")
    if info.get("model") != MODEL_KIND:
        raise InputError(folder / MODEL_CONFIG_FILE, f"a model of `alignflow evaluate-segmentation` (model {MODEL_KIND!r})", repr(info.get("model")))
    name = values.pop("network", None)
    configs = {"unet": SegmenterConfig, "segformer": SegformerSegmenterConfig}
    if name not in configs:
        raise InputError(folder / MODEL_CONFIG_FILE, "network unet or segformer", repr(name))
    config = configs[name].from_dict(values, str(folder / MODEL_CONFIG_FILE))
    model: DownstreamModel = Segmenter(config) if name == "unet" else SegformerSegmenter(config)
    model.load_saved_state_dict(weights, str(folder / MODEL_FILE))
    return model.to(device).eval().requires_grad_(False), info
