"""Maximum Mean Discrepancy with the polynomial kernel (AlignFlow Section 3.2, Eq. 7-9).

Written by hand because the reward must be differentiable with respect to the generated features and use the
paper's kernel; torchmetrics' KID computes the same estimator but detaches and subsamples.
"""

from __future__ import annotations

import torch

from alignflow.errors import InputError


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, *, degree: int = 3, coef: float = 1.0) -> torch.Tensor:
    """Eq. 8: f_p(x, y) = (<x, y> / d + c)^delta, for all pairs of rows of x [M, d] and y [N, d]."""
    d = x.shape[1]
    return (x @ y.T / d + coef) ** degree


def mmd_unbiased(
    generated: torch.Tensor, reference: torch.Tensor, *, degree: int = 3, coef: float = 1.0
) -> torch.Tensor:
    """Eq. 9 (negated, so it is a loss): the unbiased estimate of MMD^2 between two feature sets.

    1/(M(M-1)) sum_{i!=j} k(x_i, x_j) - 2/(MN) sum_ij k(x_i, y_j) + 1/(N(N-1)) sum_{i!=j} k(y_i, y_j).
    Unbiased means its expectation is 0 for identical distributions, so single draws can be slightly negative.
    """
    m, n = generated.shape[0], reference.shape[0]
    if m < 2 or n < 2:
        raise InputError("MMD", "at least 2 samples per side for the unbiased estimator", f"{m} and {n}")
    generated, reference = generated.float(), reference.float()
    k_xx = polynomial_kernel(generated, generated, degree=degree, coef=coef)
    k_yy = polynomial_kernel(reference, reference, degree=degree, coef=coef)
    k_xy = polynomial_kernel(generated, reference, degree=degree, coef=coef)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2.0 * k_xy.mean()


def mmd_biased(generated: torch.Tensor, reference: torch.Tensor, *, degree: int = 3, coef: float = 1.0) -> torch.Tensor:
    """The V-statistic (diagonal terms kept): defined for a single sample per side, always >= 0."""
    generated, reference = generated.float(), reference.float()
    k_xx = polynomial_kernel(generated, generated, degree=degree, coef=coef)
    k_yy = polynomial_kernel(reference, reference, degree=degree, coef=coef)
    k_xy = polynomial_kernel(generated, reference, degree=degree, coef=coef)
    return k_xx.mean() + k_yy.mean() - 2.0 * k_xy.mean()
