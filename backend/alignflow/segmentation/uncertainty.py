"""Per-pixel uncertainty of an ensemble of M label maps: STAPLE posterior, sample variance, predictive entropy.

All three are computed from the samples' hard labels. Variance and entropy are exactly 0 where every sample
agrees; the STAPLE map is not: it weighs the samples by their estimated reliability, so a unanimous pixel is
still uncertain when the raters are estimated to err (it is 0 everywhere only when all samples are identical).

* ``staple``: 1 - max_l W(x, l), the posterior probability that the fused label is wrong (at most 1 - 1/K);
* ``variance``: the per-pixel variance over samples of the one-hot labels, summed over classes,
  sum_k p_k (1 - p_k) = 1 - sum_k p_k^2 with p_k the vote fraction (population variance; binary: p (1 - p));
  at most 1 - 1/K;
* ``entropy``: -sum_k p_k ln p_k of the vote fractions (nats; at most ln K).
"""

from __future__ import annotations

import numpy as np

from alignflow.segmentation.staple import StapleResult, vote_fractions

UNCERTAINTY_KINDS: tuple[str, ...] = ("staple", "variance", "entropy")


def maximum_value(kind: str, num_classes: int) -> float:
    """The largest value a map of this kind can take, for renderings on a fixed scale."""
    return float(np.log(num_classes)) if kind == "entropy" else 1.0 - 1.0 / num_classes


def uncertainty_maps(samples: np.ndarray, fused: StapleResult, num_classes: int) -> dict[str, np.ndarray]:
    """{"staple", "variance", "entropy"} -> [H, W] float32 for samples [M, H, W] and their STAPLE fusion."""
    votes = vote_fractions(np.asarray(samples), num_classes).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(votes > 0, votes * np.log(votes), 0.0).sum(axis=0)
    return {
        "staple": (1.0 - fused.posterior.max(axis=0)).clip(0.0, 1.0).astype(np.float32),
        "variance": (1.0 - (votes**2).sum(axis=0)).clip(0.0, None).astype(np.float32),
        "entropy": entropy.clip(0.0, None).astype(np.float32),
    }


def image_score(values: np.ndarray, samples: np.ndarray, kind: str, num_classes: int) -> float:
    """One number per image to rank the cases to review first: the mean of an uncertainty map [H, W] over the pixels
    that some sample [M, H, W] labels as foreground, relative to the kind's maximum (so in [0, 1]).

    Over the foreground region rather than the whole image: the background far from any lesion is certain in every
    image, and its share (the image's size and framing) would otherwise decide the ranking. 0 when no sample finds
    any foreground.
    """
    region = np.asarray(samples).max(axis=0) > 0
    if not region.any():
        return 0.0
    return float(np.asarray(values)[region].mean() / maximum_value(kind, num_classes))
