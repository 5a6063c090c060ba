"""Reference advisor: which target images to use as stage-2 references, how many are enough, which are outliers,
and whether the source differs from the target enough for alignment to help (docs/reference-advisor.md)."""

# Lazy (SPEC 1): importing a submodule, e.g. the CLI's commands module, does not import torch.
import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "advise": ["Advice", "advise_references"],
        "features": ["Features", "extract_features"],
        "selection": ["criticisms", "herd_prototypes", "noise_floor", "shift_verdict"],
    },
)
