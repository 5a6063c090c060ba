"""Flow matching on labels: the path and its velocity (Eq. 1), the loss terms (Eq. 3-5), Euler, and learning on real data."""

import pytest
import torch

from alignflow.data import load_pairs, scan_dataset
from alignflow.segmentation.config import MedFlowSegConfig
from alignflow.segmentation.flow import decode_labels, dice_loss, encode_labels, euler_sample, interpolate, medflowseg_loss
from alignflow.segmentation.model import MedFlowSeg


def test_labels_encode_to_signed_one_hot_and_decode_back():
    ids = torch.tensor([[[0, 1], [2, 1]]])
    x1 = encode_labels(ids, 3)
    assert x1.shape == (1, 3, 2, 2) and set(x1.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(decode_labels(x1).long(), ids)


def test_path_runs_from_noise_to_label_with_constant_velocity_x1_minus_x0():
    x0, x1 = torch.randn(3, 2, 4, 4), encode_labels(torch.randint(0, 2, (3, 4, 4)), 2)
    assert torch.equal(interpolate(x0, x1, torch.zeros(3)), x0)
    assert torch.equal(interpolate(x0, x1, torch.ones(3)), x1)
    t, dt = torch.full((3,), 0.3), 1e-3
    finite_difference = (interpolate(x0, x1, t + dt) - interpolate(x0, x1, t)) / dt
    assert torch.allclose(finite_difference, x1 - x0, atol=1e-2)


def test_loss_is_velocity_l1_plus_lambda_dice_plus_alpha_ce(tiny_model):
    model = MedFlowSeg(MedFlowSegConfig.from_dict(tiny_model))
    images, masks = torch.rand(2, 3, 32, 32), torch.randint(0, 2, (2, 32, 32))
    terms = medflowseg_loss(model, images, masks, lambda_aux=0.1, alpha_ce=10.0, generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"loss", "loss_vel", "loss_aux", "loss_dice", "loss_ce"}
    assert torch.isclose(terms["loss_aux"], terms["loss_dice"] + 10.0 * terms["loss_ce"])
    assert torch.isclose(terms["loss"], terms["loss_vel"] + 0.1 * terms["loss_aux"])
    # Eq. 3 by hand with the same noise draws.
    g = torch.Generator().manual_seed(0)
    x1 = encode_labels(masks, 2)
    x0 = torch.randn(x1.shape, generator=g)
    t = torch.rand(2, generator=g)
    velocity, _ = model(interpolate(x0, x1, t), t, images)
    assert torch.isclose(terms["loss_vel"], (velocity - (x1 - x0)).abs().mean())


def test_dice_loss_is_zero_for_a_perfect_prediction_and_high_for_the_opposite():
    masks = torch.randint(0, 3, (2, 16, 16))
    perfect = encode_labels(masks, 3) * 50
    assert dice_loss(perfect, masks) < 1e-3
    assert dice_loss(-perfect, masks) > 0.9


class ExactField:
    """The true conditional velocity towards one label x1, (x1 - x) / (1 - t): Euler must land on x1 exactly."""

    def __init__(self, x1: torch.Tensor):
        self.x1 = x1

    def velocity(self, x, t, cond):
        return (self.x1 - x) / (1 - t.view(-1, 1, 1, 1))


@pytest.mark.parametrize("steps", [1, 3, 50])
def test_euler_reaches_the_label_for_the_exact_field(steps):
    x1 = encode_labels(torch.randint(0, 3, (2, 8, 8)), 3)
    x0 = torch.randn_like(x1)
    assert torch.allclose(euler_sample(ExactField(x1), None, x0, steps), x1, atol=1e-5)


def test_training_steps_reduce_the_loss_on_real_kvasir_pairs(kvasir, tiny_model):
    torch.manual_seed(0)
    folder = scan_dataset(kvasir, check_masks=False)
    images, masks = load_pairs(folder, 32, indices=range(8))
    model = MedFlowSeg(MedFlowSegConfig.from_dict(tiny_model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def held_loss() -> dict[str, float]:
        with torch.no_grad():
            terms = medflowseg_loss(model, images, masks, generator=torch.Generator().manual_seed(123))
        return {name: float(value) for name, value in terms.items()}

    before = held_loss()
    for _ in range(60):
        optimizer.zero_grad()
        medflowseg_loss(model, images, masks)["loss"].backward()
        optimizer.step()
    after = held_loss()
    assert after["loss"] < 0.7 * before["loss"]
    assert after["loss_vel"] < before["loss_vel"] and after["loss_aux"] < before["loss_aux"]
