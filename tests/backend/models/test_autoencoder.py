"""TAEF2 re-implementation: strict load of the real weights, faithful round trip, frozen but differentiable."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from alignflow.models.autoencoder import TinyAutoencoder, build_decoder, build_encoder
from alignflow.weights import load_state_dict


@pytest.fixture(scope="module")
def autoencoder():
    return TinyAutoencoder.from_pretrained()


def kvasir_image(kvasir, size=256):
    path = min((kvasir / "images").iterdir())  # first by name
    image = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255


def test_state_dicts_load_strictly_with_the_pool_branches():
    for build, name, pooled in ((build_encoder, "taef2_encoder", "11"), (build_decoder, "taef2_decoder", "3")):
        state = load_state_dict(name)
        assert f"{pooled}.pool.0.weight" in state and state[f"{pooled}.pool.0.weight"].dtype == torch.float16
        result = build().load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        assert not result.missing_keys and not result.unexpected_keys


def test_round_trip_of_a_real_kvasir_image_above_25_db(autoencoder, kvasir):
    image = kvasir_image(kvasir)
    with torch.no_grad():
        latents = autoencoder.encode(image)
        restored = autoencoder.decode(latents)
    assert latents.shape == (1, autoencoder.latent_channels, 256 // autoencoder.downscale, 256 // 8) == (1, 32, 32, 32)
    assert restored.shape == image.shape and 0 <= restored.min() and restored.max() <= 1
    psnr = 10 * math.log10(1.0 / torch.mean((restored - image) ** 2).item())
    assert psnr > 25.0, psnr


def test_non_square_latent_shape(autoencoder):
    with torch.no_grad():
        assert autoencoder.encode(torch.rand(2, 3, 64, 48)).shape == (2, 32, 8, 6)


def test_frozen_but_decode_is_differentiable_wrt_latents(autoencoder):
    assert not autoencoder.training
    latents = (0.5 * torch.randn(1, 32, 4, 4)).requires_grad_(True)
    autoencoder.decode(latents).mean().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in autoencoder.parameters())
