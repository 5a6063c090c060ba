"""Feature encoders: genuine ImageNet weights, the common interface, gradients to the input, the DINO path."""

import pytest
import torch
from skimage import data as skdata

from alignflow.errors import InputError
from alignflow.models.feature_encoders import EfficientNetLite0Encoder, FeatureEncoder, build_feature_encoder


@pytest.fixture(scope="module")
def efficientnet():
    return build_feature_encoder()


def test_default_is_efficientnet_lite0(efficientnet):
    assert isinstance(efficientnet, EfficientNetLite0Encoder) and isinstance(efficientnet, FeatureEncoder)
    assert efficientnet.name == "efficientnet-lite0" and efficientnet.dim == 1280 and not efficientnet.training
    efficientnet.train()
    assert not efficientnet.training  # stays in eval mode


def test_weights_are_genuine_imagenet(efficientnet):
    cat = torch.from_numpy(skdata.chelsea()).permute(2, 0, 1)[None].float() / 255  # 300 x 451 photo
    with torch.no_grad():
        probabilities = efficientnet.classify(cat).softmax(-1)
    assert probabilities.argmax().item() == 285  # Egyptian cat


def test_features_shape_and_gradient_to_the_input(efficientnet):
    images = torch.rand(2, 3, 96, 80, requires_grad=True)
    features = efficientnet(images)
    assert features.shape == (2, 1280)
    features.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in efficientnet.parameters())


def test_dino_path_loads_a_tiny_local_transformers_folder(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          image_size=28, patch_size=14)
    Dinov2Model(config).save_pretrained(tmp_path / "dino")
    encoder = build_feature_encoder(f"dino:{tmp_path / 'dino'}")
    assert encoder.dim == 32 and encoder.name == f"dino:{tmp_path / 'dino'}" and encoder.size == 28
    images = torch.rand(3, 3, 64, 48, requires_grad=True)
    features = encoder(images)
    assert features.shape == (3, 32)
    # Not features.sum(): the CLS token leaves a final LayerNorm (weight 1, bias 0 at init), whose sum is constant.
    (features * torch.linspace(-1, 1, 32)).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in encoder.parameters())


@pytest.mark.parametrize("name", ["resnet50", "dino:", "", "EfficientNet-Lite0"])
def test_unknown_names_name_the_parameter(name):
    with pytest.raises(InputError, match="feature_encoder"):
        build_feature_encoder(name)


def test_unloadable_dino_folder_names_the_parameter(tmp_path):
    with pytest.raises(InputError, match="feature_encoder"):
        build_feature_encoder(f"dino:{tmp_path / 'missing'}")
