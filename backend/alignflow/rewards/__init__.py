"""Differentiable alignment rewards between generated images and target-domain reference images."""

from .alignment import AlignmentReward, augment_single_reference
from .mmd import mmd_biased, mmd_unbiased, polynomial_kernel
from .skl import symmetric_kl

__all__ = [
    "AlignmentReward",
    "augment_single_reference",
    "mmd_biased",
    "mmd_unbiased",
    "polynomial_kernel",
    "symmetric_kl",
]
