"""Partially tunable inference (Algorithm 1, lines 9-16) and the flow-matching pieces, on a tiny real SD3 model."""

import copy

import pytest
import torch

from alignflow.flow_matching import (
    denoising_loss,
    euler_sample,
    frozen_euler,
    interpolate,
    partially_tunable_inference,
    tunable_jump,
)
from alignflow.generator.factory import build_generator
from alignflow.generator.model import GeneratorConfig

TINY = dict(resolution=32, num_layers=2, controlnet_layers=1, attention_head_dim=8, num_attention_heads=2, context_tokens=2, patch_size=1)


@pytest.fixture()
def model():
    torch.manual_seed(0)
    generator = build_generator(GeneratorConfig(**TINY))
    # ControlNet output layers start at zero (diffusers' zero_module); give them weights so gradients are non-trivial.
    for parameter in generator.controlnet.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    return generator


def batch(n=2):
    return torch.randn(n, 32, 4, 4), torch.randn(n, 32, 4, 4)


def graph_size(tensor: torch.Tensor) -> int:
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return len(seen)


def test_interpolation_endpoints():
    x1, eps = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.equal(interpolate(x1, eps, torch.zeros(3)), eps)
    assert torch.equal(interpolate(x1, eps, torch.ones(3)), x1)


def test_no_graph_is_kept_for_the_frozen_steps(model):
    noise, masks = batch()
    x_s = frozen_euler(model, noise, masks, 18, num_steps=20)
    assert x_s.grad_fn is None and not x_s.requires_grad
    # The graph of x0_hat is one model call deep whatever the number of frozen steps before it.
    sizes = [graph_size(partially_tunable_inference(model, model, noise, masks, k).x0_hat) for k in (1, 10, 19)]
    assert sizes[0] == sizes[1] == sizes[2] > 0


def test_gradients_flow_only_through_the_last_step(model):
    noise, masks = batch()
    torch.manual_seed(1)
    result = partially_tunable_inference(model, model, noise, masks, 18)
    result.x0_hat.square().mean().backward()
    full = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    # The same gradient from the last step alone, its input computed separately and detached.
    x_s = frozen_euler(model, noise, masks, 18).detach()
    tunable_jump(model, x_s, 18 / 20, masks).square().mean().backward()
    alone = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert full.keys() == alone.keys() and len(full) > 0
    for name in full:
        assert torch.allclose(full[name], alone[name], atol=1e-6), name


def test_gradients_reach_only_the_tunable_weights(model):
    noise, masks = batch()
    snapshot = copy.deepcopy(model).requires_grad_(False)
    model.transformer.requires_grad_(False)  # the paper tunes the ControlNet only
    model.conditioning.requires_grad_(False)
    result = partially_tunable_inference(model, snapshot, noise, masks, 19)
    result.x0_hat.sum().backward()
    assert all(p.grad is None for p in model.transformer.parameters())
    assert all(p.grad is None for p in snapshot.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.controlnet.parameters())
    assert result.s == pytest.approx(0.95)


def test_denoising_loss_trains_and_guided_sampling_is_deterministic(model):
    torch.manual_seed(0)
    x1, masks = batch(4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = denoising_loss(model, x1, masks, cond_dropout=0.25)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < sum(losses[:5])
    noise = torch.randn(2, 32, 4, 4)
    a = euler_sample(model, noise, masks[:2], num_steps=4, guidance_scale=3.0)
    b = euler_sample(model, noise, masks[:2], num_steps=4, guidance_scale=3.0)
    assert torch.equal(a, b) and a.shape == noise.shape


def test_dropped_condition_ignores_the_mask(model):
    x, _ = batch()
    t = torch.full((2,), 0.5)
    keep = torch.zeros(2, dtype=torch.bool)
    a = model.velocity(x, t, torch.randn(2, 32, 4, 4), keep)
    b = model.velocity(x, t, torch.randn(2, 32, 4, 4), keep)
    assert torch.allclose(a, b)
    assert not torch.allclose(model.velocity(x, t, torch.randn(2, 32, 4, 4)), model.velocity(x, t, torch.randn(2, 32, 4, 4)))
