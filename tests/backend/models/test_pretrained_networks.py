"""The pretrained networks load offline, are the genuine weights, and behave as the engine needs."""

import math

import pytest
import torch
from skimage import data as skdata

from alignflow.data import read_image, to_tensor
from alignflow.errors import InputError
from alignflow.models.autoencoder import TinyAutoencoder
from alignflow.models.feature_encoders import build_feature_encoder


@pytest.fixture(scope="module")
def autoencoder():
    return TinyAutoencoder.from_pretrained()


@pytest.fixture(scope="module")
def efficientnet():
    return build_feature_encoder("efficientnet-lite0")


def test_taef2_round_trip_of_a_real_image_above_25_db(autoencoder, clinicdb):
    image = to_tensor(read_image(sorted((clinicdb / "images").glob("*.png"))[0]))[None]  # 256 x 192 endoscopy frame
    latents = autoencoder.encode(image)
    assert latents.shape == (1, 32, image.shape[2] // 8, image.shape[3] // 8)
    restored = autoencoder.decode(latents)
    psnr = 10 * math.log10(1.0 / torch.mean((restored - image) ** 2).item())
    assert psnr > 25.0


def test_taef2_is_frozen_but_decode_is_differentiable(autoencoder):
    latents = torch.randn(1, 32, 4, 4, requires_grad=True)
    autoencoder.decode(latents).mean().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in autoencoder.parameters())


def test_efficientnet_weights_are_genuine_imagenet(efficientnet):
    cat = torch.from_numpy(skdata.chelsea()).permute(2, 0, 1)[None].float() / 255
    assert efficientnet.classify(cat).argmax().item() == 285  # Egyptian cat


def test_efficientnet_features_shape_and_gradient_to_the_input(efficientnet):
    images = torch.rand(2, 3, 96, 80, requires_grad=True)
    features = efficientnet(images)
    assert features.shape == (2, 1280) and efficientnet.dim == 1280
    features.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in efficientnet.parameters())


def test_dino_path_loads_a_local_transformers_folder(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=28, patch_size=14)).save_pretrained(tmp_path / "dino")
    encoder = build_feature_encoder(f"dino:{tmp_path / 'dino'}")
    images = torch.rand(3, 3, 64, 64, requires_grad=True)
    features = encoder(images)
    assert features.shape == (3, 32) and encoder.dim == 32
    features.sum().backward()
    assert images.grad is not None


def test_unknown_encoder_names_the_parameter():
    with pytest.raises(InputError, match="feature_encoder"):
        build_feature_encoder("resnet")


def test_weights_override_checks_the_sha256(tmp_path, monkeypatch):
    from alignflow import weights

    (tmp_path / "taef2_encoder.pth").write_bytes(b"not the weights")
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path))
    with pytest.raises(InputError, match="taef2_encoder.pth.*sha256"):
        weights.weight_path("taef2_encoder")
    with pytest.raises(InputError, match="taef2_decoder.pth"):
        weights.weight_path("taef2_decoder")  # missing from the override folder
    with pytest.raises(InputError, match="one of"):
        weights.weight_path("nope")


def test_nothing_downloads_at_import():
    import subprocess
    import sys

    code = "import sys, alignflow.cli, alignflow.weights, alignflow.models.autoencoder; print('pooch' in sys.modules, 'efficientnet_lite_pytorch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
