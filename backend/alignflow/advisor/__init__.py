"""Reference advisor: which target images to use as stage-2 references, how many are enough, which are outliers,
and whether the source differs from the target enough for alignment to help (docs/reference-advisor.md)."""

from .advise import Advice, advise_references
from .features import Features, extract_features
from .selection import criticisms, herd_prototypes, noise_floor, shift_verdict

__all__ = ["Advice", "Features", "advise_references", "criticisms", "extract_features", "herd_prototypes",
           "noise_floor", "shift_verdict"]
