"""Alignment Regularization (free-lunch paper, Section 3.2) in flow-matching form, on a tiny real SD3 generator."""

import json

import pytest
import torch

from alignflow.cli import main
from alignflow.flow_matching import euler_sample, interpolate
from alignflow.generator.alignment_regularization import (
    alignment_regularization,
    denoising_with_alignment_regularization,
    predicted_noise,
)
from alignflow.generator.config import TrainConfig
from alignflow.generator.factory import build_generator
from alignflow.generator.model import GeneratorConfig
from alignflow.generator.training import train
from alignflow.runs.checkpoint import read_generator_folder
from alignflow.runs.events import read_events

TINY = dict(resolution=32, num_layers=2, controlnet_layers=1, attention_head_dim=8, num_attention_heads=2, context_tokens=2, patch_size=1)


@pytest.fixture()
def model():
    torch.manual_seed(0)
    generator = build_generator(GeneratorConfig(**TINY, mask_head=True))
    for parameter in generator.controlnet.parameters():  # zero-initialised output layers would hide gradients
        torch.nn.init.normal_(parameter, std=0.02)
    return generator


def test_predicted_noise_inverts_the_interpolation():
    x1, eps, t = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.rand(3)
    x_t = interpolate(x1, eps, t)
    assert torch.allclose(predicted_noise(x_t, t, x1 - eps), eps, atol=1e-6)  # the true velocity gives the true noise


def test_loss_is_zero_when_the_two_predictions_agree_and_positive_otherwise():
    eps = torch.randn(4, 32, 4, 4)
    assert alignment_regularization(eps, eps.clone()) == 0
    assert alignment_regularization(eps, eps + 0.5) == pytest.approx(0.25)
    # Samples without their condition (CFG dropout) do not count.
    other = eps.clone()
    other[0] += 1.0
    assert alignment_regularization(eps, other, keep=torch.tensor([False, True, True, True])) == 0


def test_gradient_reaches_both_heads_and_the_shared_body(model):
    x1, masks = torch.randn(2, 32, 4, 4), torch.randn(2, 32, 4, 4)
    denoising, regularization = denoising_with_alignment_regularization(model, x1, masks, generator=torch.Generator().manual_seed(0))
    assert regularization > 0 and denoising > 0
    regularization.backward()
    for name, module in [("image head", model.transformer.proj_out), ("mask head", model.mask_head.proj_out),
                         ("shared body", model.transformer.transformer_blocks[0])]:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), name
    # The swap is undone: the transformer's own head is in place again.
    assert model.transformer.proj_out is not model.mask_head.proj_out


def test_generation_uses_the_image_head_only(model):
    noise, masks = torch.randn(2, 32, 4, 4), torch.randn(2, 32, 4, 4)
    before = euler_sample(model, noise, masks, num_steps=3, guidance_scale=2.0)
    with torch.no_grad():
        for parameter in model.mask_head.parameters():
            parameter.add_(1.0)
    assert torch.equal(euler_sample(model, noise, masks, num_steps=3, guidance_scale=2.0), before)


def test_stage1_run_with_ar_saves_the_mask_head(tmp_path, kvasir, make_pairs):
    make_pairs(kvasir, tmp_path / "data", 4)
    train_config = TrainConfig(source=str(tmp_path / "data"), out=str(tmp_path / "run"), steps=2, batch_size=2, device="cpu",
                               checkpoint_every=1, preview_every=100, log_every=1, w_ar=0.5, generator=dict(TINY))
    generator = train(train_config)
    values, weights, info = read_generator_folder(generator)
    assert values["mask_head"] is True and any(key.startswith("mask_head.") for key in weights)
    assert info["alignment_regularization"] == 0.5
    progress = [e for e in read_events(tmp_path / "run") if e["type"] == "progress" and e.get("stage") == 1]
    assert progress and all("loss_ar" in e for e in progress)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {"denoising_forward", "ar_mask_branch_forward", "denoising_ar_backward"} <= summary["seconds_per_step"].keys()
    # A resumed run rebuilds the head and loads it from the checkpoint.
    train_config.steps = 3
    assert read_generator_folder(train(train_config, resume=True))[0]["mask_head"] is True


def test_negative_weight_is_an_input_error(tmp_path, capsys):
    code = main(["train", "--source", str(tmp_path), "--out", str(tmp_path / "run"), "--w-ar", "-1", "--device", "cpu"])
    assert code == 2 and "w_ar" in capsys.readouterr().err
