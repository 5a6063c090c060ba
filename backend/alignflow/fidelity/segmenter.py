"""The segmenters of label drift: the evaluator (mask-fidelity metric) and the reward segmenter (stage-2 L_M).

Both are MONAI networks wrapped with their configuration, saved as safetensors + JSON (``segmenter.json``) and
loaded without unpickling. They are deliberately different networks (MONAI ``UNet`` for the evaluator, MONAI
``BasicUNet`` with other widths for the reward) trained on disjoint halves of the source (see ``training.py``): a
generator that learns to please the reward segmenter should not thereby also please the judge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignflow.config import DictConfig
from alignflow.errors import InputError
from alignflow.runs.checkpoint import MODEL_FILE, load_state_dict_strict, read_model_folder, save_model_folder

SEGMENTER_DIR = "segmenter"
SEGMENTER_CONFIG_FILE = "segmenter.json"
MODEL_KIND = "fidelity-segmenter"  # written into the folder's info; MedFlowSeg folders say "medflowseg"
ARCHITECTURES = ("unet", "basic-unet")
ROLES = ("evaluator", "reward")
# Evaluator and reward segmenter differ in architecture and widths by default (see the module docstring).
ROLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "evaluator": {"architecture": "unet", "channels": [16, 32, 64, 128, 256]},
    "reward": {"architecture": "basic-unet", "channels": [16, 16, 32, 64, 128, 16]},
}


@dataclass
class SegmenterConfig(DictConfig):
    """Architecture of a segmenter. ``num_classes`` counts the background (binary masks: 2)."""

    config_name = "segmenter config"
    validate_on_load = True

    architecture: str = "unet"  # "unet" (monai.networks.nets.UNet) or "basic-unet" (monai.networks.nets.BasicUNet)
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])  # unet: one per level; basic-unet: 6
    num_res_units: int = 2  # unet only
    num_classes: int = 2
    resolution: int = 128  # images and masks are squashed to this square side, as the generator does

    @property
    def downsamplings(self) -> int:
        return len(self.channels) - 1 if self.architecture == "unet" else 4

    def validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise InputError("segmenter.architecture", f"one of {', '.join(ARCHITECTURES)}", repr(self.architecture))
        if self.architecture == "unet" and len(self.channels) < 2:
            raise InputError("segmenter.channels", "at least 2 channel counts for a MONAI UNet", repr(self.channels))
        if self.architecture == "basic-unet" and len(self.channels) != 6:
            raise InputError("segmenter.channels", "6 feature counts for a MONAI BasicUNet", repr(self.channels))
        if min(self.channels) < 1:
            raise InputError("segmenter.channels", "positive channel counts", repr(self.channels))
        if self.num_classes < 2:
            raise InputError("segmenter.num_classes", "at least 2 (background + one class)", str(self.num_classes))
        if self.resolution < 2**self.downsamplings or self.resolution % 2**self.downsamplings:
            raise InputError("segmenter.resolution", f"a multiple of {2**self.downsamplings}", str(self.resolution))


def _network(config: SegmenterConfig) -> nn.Module:
    from monai.networks.nets import BasicUNet, UNet

    if config.architecture == "unet":
        return UNet(spatial_dims=2, in_channels=3, out_channels=config.num_classes, channels=config.channels,
                    strides=[2] * (len(config.channels) - 1), num_res_units=config.num_res_units)
    return BasicUNet(spatial_dims=2, in_channels=3, out_channels=config.num_classes, features=config.channels)


class Segmenter(nn.Module):
    """Images [N, 3, R, R] in [0, 1] -> class logits [N, C, R, R] (R = ``config.resolution``)."""

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.net = _network(config)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2.0 - 1.0)  # centred input; the networks' instance norms do the rest

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Class ids [N, R, R] of images already at the segmenter's resolution."""
        return torch.cat([self(chunk).argmax(dim=1) for chunk in images.split(batch_size)])

    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def load_saved_state_dict(self, state: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
        """Strict loading; a checkpoint of another architecture or size is an InputError naming ``where``."""
        load_state_dict_strict(self, state, where, f"weights of the segmenter in its config ({self.config.architecture}, channels "
                                                   f"{self.config.channels}, {self.config.num_classes} classes)")


@dataclass
class LoadedSegmenter:
    """A trained segmenter, frozen, with its provenance (role, kind, training data)."""

    model: Segmenter
    info: dict[str, Any]
    folder: Path

    @property
    def config(self) -> SegmenterConfig:
        return self.model.config

    @property
    def kind(self) -> str:
        """"benchmark" (source + target pool), "source-only" (photometric augmentation) or "reward"."""
        return str(self.info.get("kind", "unknown"))


def save_segmenter(folder: Path, model: Segmenter, info: dict[str, Any]) -> Path:
    """Weights + config + provenance, written atomically."""
    return save_model_folder(folder, model, model.config.to_dict(), {"model": MODEL_KIND, **info}, SEGMENTER_CONFIG_FILE)


def load_segmenter(folder: str | Path, device: torch.device | str = "cpu") -> LoadedSegmenter:
    """A segmenter folder (or the run folder holding ``segmenter/``), frozen and in eval mode."""
    values, weights, info, folder = read_model_folder(
        Path(folder), config_file=SEGMENTER_CONFIG_FILE, subfolder=SEGMENTER_DIR,
        expected=f"a segmenter folder from `alignflow train-evaluator` ({SEGMENTER_CONFIG_FILE} + {MODEL_FILE}) or its run folder")
    config_path = folder / SEGMENTER_CONFIG_FILE
    if info.get("model") != MODEL_KIND:
        raise InputError(config_path, f"a segmenter from `alignflow train-evaluator` (model {MODEL_KIND!r})", repr(info.get("model")))
    model = Segmenter(SegmenterConfig.from_dict(values, str(config_path)))
    model.load_saved_state_dict(weights, str(folder / MODEL_FILE))
    return LoadedSegmenter(model.to(device).eval().requires_grad_(False), info, folder)


def check_independent(evaluator: LoadedSegmenter, reward: LoadedSegmenter) -> None:
    """The judge must not share the reward segmenter's architecture or source images, or the generator could learn
    to fool both at once (issue 10: the reward made lesions into pale blobs the reward segmenter liked)."""
    if evaluator.config.architecture == reward.config.architecture and evaluator.config.channels == reward.config.channels:
        raise InputError(evaluator.folder, "an evaluator of another architecture than the reward segmenter "
                                           f"{reward.folder}", f"both {evaluator.config.architecture} {evaluator.config.channels}")
    # Resolved paths: split folders of symlinks into one dataset still count as the same images.
    shared = set(evaluator.info.get("training_images", [])) & set(reward.info.get("training_images", []))
    if shared:
        raise InputError(evaluator.folder, f"an evaluator trained on other images than the reward segmenter {reward.folder}",
                         f"{len(shared)} shared (e.g. {sorted(shared)[:2]})")
