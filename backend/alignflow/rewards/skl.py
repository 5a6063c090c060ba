"""Symmetric Kullback-Leibler reward (AlignFlow Section 3.2, Eq. 10-12), the alternative to MMD."""

from __future__ import annotations

import torch


def symmetric_kl(generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Eq. 12 (negated into a loss): 1/2 [KL(F_out || F_ref) + KL(F_ref || F_out)].

    As in the paper, each feature set is first averaged over its samples (so the two sides need not have the same
    count). The paper does not say how a mean feature vector becomes a distribution; a softmax over the feature
    channels is used here, which is defined for features of any sign and keeps the loss differentiable.
    """
    log_p = torch.log_softmax(generated.float().mean(dim=0), dim=0)
    log_q = torch.log_softmax(reference.float().mean(dim=0), dim=0)
    kl_pq = (log_p.exp() * (log_p - log_q)).sum()  # Eq. 11
    kl_qp = (log_q.exp() * (log_q - log_p)).sum()
    return 0.5 * (kl_pq + kl_qp)  # Eq. 10
