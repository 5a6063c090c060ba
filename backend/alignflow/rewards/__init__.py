"""Differentiable alignment rewards between generated images and target-domain reference images."""

# Lazy (SPEC 1): importing a submodule, e.g. the CLI's commands module, does not import torch.
import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "alignment": ["AlignmentReward", "augment_single_reference"],
        "mmd": ["mmd_biased", "mmd_unbiased", "polynomial_kernel"],
        "skl": ["symmetric_kl"],
    },
)
