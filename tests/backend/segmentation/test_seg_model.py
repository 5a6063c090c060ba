"""MedFlowSeg's networks: shapes, gradients of DB-SA and FA-Attention, the presets, config errors."""

import pytest
import torch

from alignflow.errors import InputError
from alignflow.segmentation.conditioning import (
    DualBranchSpatialAttention,
    FrequencyAwareAttention,
    LearnableGaussianBlur,
    inverse_spectrum,
    spectrum,
)
from alignflow.segmentation.config import MedFlowSegConfig
from alignflow.segmentation.model import MedFlowSeg


def randomise_zero_inits(module: torch.nn.Module) -> None:
    """Zero-initialised layers (FiLM, adaLN, the modulator's mask) block gradients to what is behind them at step 0."""
    torch.manual_seed(0)
    for parameter in module.parameters():
        if not parameter.detach().any():
            parameter.data.normal_(0, 0.1)


def test_velocity_and_aux_shapes_binary_and_multiclass(tiny_model):
    for classes in (2, 3):
        model = MedFlowSeg(MedFlowSegConfig.from_dict({**tiny_model, "num_classes": classes}))
        x_t, images, t = torch.randn(2, classes, 32, 32), torch.rand(2, 3, 32, 32), torch.rand(2)
        velocity, aux = model(x_t, t, images)
        assert velocity.shape == (2, classes, 32, 32) and aux.shape == (2, classes, 32, 32)


def test_db_sa_gate_shape_range_and_gradients():
    block = DualBranchSpatialAttention(8, 8, low_kernel=3, high_kernel=5)
    feature = torch.randn(2, 8, 16, 16, requires_grad=True)
    gate = block(feature)
    assert gate.shape == (2, 8, 16, 16) and 0 < gate.min() and gate.max() < 1
    flow = torch.randn(2, 8, 16, 16)
    DualBranchSpatialAttention.apply(gate, flow).square().mean().backward()
    assert feature.grad is not None and feature.grad.abs().sum() > 0
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name  # sigma of both Gaussians learns


def test_learnable_gaussian_is_a_normalised_low_pass():
    blur = LearnableGaussianBlur(4, 5)
    kernel = blur.kernel()
    assert kernel.shape == (4, 1, 5, 5)
    assert torch.allclose(kernel.sum(dim=(1, 2, 3)), torch.ones(4))
    constant = torch.full((1, 4, 9, 9), 3.0)
    assert torch.allclose(blur(constant), constant, atol=1e-5)  # a constant image has no high frequencies


def test_spectrum_round_trip_is_exact():
    x = torch.randn(2, 6, 8, 8)
    spec = spectrum(x)
    assert spec.shape == (2, 12, 8, 8)
    assert torch.allclose(inverse_spectrum(spec), x, atol=1e-5)


def test_fa_attention_shapes_and_gradients():
    layer = FrequencyAwareAttention(channels=16, dim=16, heads=2, patch=2, time_dim=8, modulator_blocks=2)
    randomise_zero_inits(layer)
    flow = torch.randn(2, 16, 8, 8, requires_grad=True)
    cond = torch.randn(2, 16, 8, 8, requires_grad=True)
    temb = torch.randn(2, 8, requires_grad=True)
    out = layer(flow, cond, temb)
    assert out.shape == cond.shape
    out.square().mean().backward()
    for name, tensor in (("flow", flow), ("cond", cond), ("time", temb)):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, name
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_fa_attention_starts_as_a_refinement_of_the_condition():
    """With the modulator's mask at zero (its initialisation), Eq. 12 is the identity and the layer is residual."""
    layer = FrequencyAwareAttention(channels=16, dim=16, heads=2, patch=2, time_dim=8, modulator_blocks=2)
    flow, cond, temb = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8), torch.randn(1, 8)
    mask = layer.modulator(torch.randn(1, 16, 16), torch.randn(1, 16, 16), torch.randn(1, 16, 16), temb)
    assert torch.equal(mask, torch.zeros_like(mask))
    assert not torch.allclose(layer(flow, cond, temb), cond)  # the spectral cross-attention already contributes


def test_condition_features_are_shared_by_an_ensemble(tiny_model):
    """The Condition Network runs once per image; repeating its features equals recomputing them per sample."""
    model = MedFlowSeg(MedFlowSegConfig.from_dict(tiny_model)).eval()
    images, x_t, t = torch.rand(2, 3, 32, 32), torch.randn(6, 2, 32, 32), torch.rand(6)
    with torch.no_grad():
        shared = model.velocity(x_t, t, model.condition(images).repeat(3))
        separate = model.velocity(x_t, t, model.condition(images.repeat_interleave(3, dim=0)))
    assert torch.allclose(shared, separate, atol=1e-5)


def test_every_parameter_is_trained_by_the_loss(tiny_model):
    model = MedFlowSeg(MedFlowSegConfig.from_dict(tiny_model))
    randomise_zero_inits(model)
    velocity, aux = model(torch.randn(2, 2, 32, 32), torch.rand(2), torch.rand(2, 3, 32, 32))
    (velocity.abs().mean() + aux.square().mean()).backward()
    untouched = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not untouched


def test_paper_preset_matches_section_4_2():
    config = MedFlowSegConfig.from_dict({"preset": "paper", "num_classes": 3})
    assert config.channels == [64, 128, 256, 256] and config.res_blocks == 2 and config.time_embed_dim == 256
    assert config.fa_layers == 4 and config.modulator_blocks == 2 and config.resolution == 256
    model = MedFlowSeg(config)
    assert len(model.fa_attention) == 4 and len(model.fa_attention[0].modulator.blocks) == 2
    assert all(len(level) == 2 for level in model.flow_network.encoder)
    small = MedFlowSegConfig.from_dict({"preset": "small"})
    assert small.resolution == 128 and small.fa_layers == 4 and small.modulator_blocks == 2


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"resolution": 100}, "resolution"),
        ({"preset": "huge"}, "preset"),
        ({"channelz": [1]}, "channelz"),
        ({"channels": [8, 8, 16]}, "channels"),
        ({"norm_groups": 3}, "norm_groups"),
        ({"num_classes": 1}, "num_classes"),
        ({"high_pass_kernel": 4}, "high_pass_kernel"),
    ],
)
def test_bad_model_config_names_the_parameter(tiny_model, values, named):
    with pytest.raises(InputError, match=named):
        MedFlowSegConfig.from_dict({**tiny_model, **values})
