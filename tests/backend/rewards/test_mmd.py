import numpy as np
import pytest
import torch

from alignflow.errors import InputError
from alignflow.rewards import AlignmentReward, mmd_biased, mmd_unbiased, polynomial_kernel, symmetric_kl


def numpy_mmd_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, coef: float = 1.0) -> float:
    """Eq. 9 written out with explicit loops over pairs: the reference the vectorised version must match."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + coef) ** degree  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_matches_direct_numpy_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 16)), rng.normal(0.3, 1.2, size=(5, 16))
    expected = numpy_mmd_unbiased(x, y)
    got = mmd_unbiased(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_polynomial_kernel_definition():
    x, y = torch.randn(3, 8), torch.randn(4, 8)
    assert torch.allclose(polynomial_kernel(x, y), (x @ y.T / 8 + 1) ** 3)


def test_zero_in_expectation_for_the_same_distribution_and_positive_for_a_shift():
    generator = torch.Generator().manual_seed(0)
    same, shifted = [], []
    for _ in range(200):
        a = torch.randn(8, 32, generator=generator)
        b = torch.randn(10, 32, generator=generator)
        same.append(mmd_unbiased(a, b).item())
        shifted.append(mmd_unbiased(a + 0.5, b).item())
    spread = np.std(same) / np.sqrt(len(same))
    assert abs(np.mean(same)) < 4 * spread  # unbiased: single draws scatter around 0
    assert min(same) < 0 < max(same)
    assert np.mean(shifted) > 20 * spread and np.mean(np.array(shifted) > 0) > 0.95


def test_biased_estimator_is_nonnegative_and_defined_for_one_sample():
    a, b = torch.randn(1, 16), torch.randn(1, 16)
    assert mmd_biased(a, b).item() >= 0
    with pytest.raises(InputError, match="at least 2 samples"):
        mmd_unbiased(a, b)


def test_symmetric_kl_zero_for_identical_positive_and_symmetric_otherwise():
    a, b = torch.randn(6, 20), torch.randn(4, 20) + 1.0
    assert symmetric_kl(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert symmetric_kl(a, b).item() > 0
    assert symmetric_kl(a, b).item() == pytest.approx(symmetric_kl(b, a).item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["mmd", "skl"])
def test_reward_is_differentiable_wrt_generated_images(kind):
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    encoder.requires_grad_(False)
    reward = AlignmentReward(encoder, torch.rand(5, 3, 16, 16), kind=kind)
    images = torch.rand(4, 3, 16, 16, requires_grad=True)
    reward(images).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert reward.reference_features.grad is None


def test_single_reference_is_augmented_and_warns():
    encoder = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    with pytest.warns(UserWarning, match="unreliable"):
        reward = AlignmentReward(encoder, torch.rand(1, 3, 16, 16))
    assert reward.reference_features.shape[0] >= 2
    assert torch.isfinite(reward(torch.rand(3, 3, 16, 16)))
