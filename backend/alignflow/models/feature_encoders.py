"""Frozen pretrained feature encoders for the alignment reward (Section 3.1: global pooled features).

All take RGB images [N, 3, H, W] in [0, 1] of any size and return pooled features [N, D], differentiable with respect
to the images (the stage-2 gradient flows through them) while their own weights stay frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureEncoder(nn.Module):
    name: str = ""
    dim: int = 0

    def freeze(self) -> FeatureEncoder:
        return self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> FeatureEncoder:
        # Always in eval mode: batch norm statistics and dropout must not change while it scores images.
        return super().train(False)


class EfficientNetLite0Encoder(FeatureEncoder):
    """EfficientNet-Lite0 ImageNet (1280-d, the width of the paper's DINOv3 ViT-H16+ features); works offline.

    Input normalisation is the TF-Lite original, (x - 127) / 128 on 0-255 pixels (see ../shared/weights/PROVENANCE.md).
    """

    name = "efficientnet-lite0"
    dim = 1280
    size = 224

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        from ..weights import efficientnet_lite0_weights_path

        self.net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state, strict=True)
        self.freeze()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (images * 255.0 - 127.0) / 128.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(self.preprocess(images)).mean(dim=(2, 3))

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (used to check that the weights are the genuine ones)."""
        return self.net(self.preprocess(images))


class DinoEncoder(FeatureEncoder):
    """DINOv2/DINOv3 through transformers (the paper's encoder): CLS token of the last layer."""

    def __init__(self, model_name_or_path: str):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        try:
            self.net = AutoModel.from_pretrained(model_name_or_path)
        except (OSError, ValueError) as error:
            raise InputError("feature_encoder", "a DINO model folder or hub id transformers can load", f"{model_name_or_path} ({error})") from None
        config = AutoConfig.from_pretrained(model_name_or_path)
        self.name = f"dino:{model_name_or_path}"
        self.dim = int(config.hidden_size)
        self.size = int(getattr(config, "image_size", 224) or 224)
        mean, std = self._normalisation(model_name_or_path)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.freeze()

    @staticmethod
    def _normalisation(model_name_or_path: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        try:
            from transformers import AutoImageProcessor

            processor = AutoImageProcessor.from_pretrained(model_name_or_path)
            return tuple(processor.image_mean), tuple(processor.image_std)
        except (OSError, ValueError, AttributeError, TypeError):
            return IMAGENET_MEAN, IMAGENET_STD

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        outputs = self.net(pixel_values=(images - self.mean) / self.std)
        return outputs.last_hidden_state[:, 0]


def build_feature_encoder(name: str = "efficientnet-lite0", device: torch.device | str = "cpu") -> FeatureEncoder:
    """``efficientnet-lite0`` (default) or ``dino:<folder or hub id>``."""
    if name == "efficientnet-lite0":
        encoder: FeatureEncoder = EfficientNetLite0Encoder()
    elif name.startswith("dino:") and len(name) > 5:
        encoder = DinoEncoder(name[5:])
    else:
        raise InputError("feature_encoder", "'efficientnet-lite0' or 'dino:<folder or hub id>'", repr(name))
    return encoder.to(device)
