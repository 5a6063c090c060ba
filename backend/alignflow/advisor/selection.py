"""Which target images to use as references, how many are enough, which are outliers, and whether there is a shift.

Representative picks are MMD-critic prototypes (Kim, Khanna & Koyejo, "Examples are not enough, learn to criticize!
Criticism for interpretability", NeurIPS 2016, Section 3.1): greedily, the image whose addition brings the chosen
set's mean embedding closest to the whole set's, i.e. minimises the biased MMD^2

    MMD^2(S, X) = 1/|S|^2 sum_{i,j in S} k(x_i, x_j) - 2/(|S| n) sum_{i in S, j} k(x_i, x_j) + 1/n^2 sum_{i,j} k(x_i, x_j)

with the reward's polynomial kernel (AlignFlow Eq. 8). This is the quantity that matters for stage 2: the reward's
unbiased MMD (Eq. 9) pulls generated features towards the references' mean embedding, so MMD^2(S, X) is the part of
the target that references S cannot show the generator. The greedy order is nested: the picks for k are the first k.

Outliers are MMD-critic criticisms, scored with the witness function w(x) = mean_j k(x, x_j) - mean_{z in Z} k(x, z)
(Kim et al. Eq. 4) of the whole set against the whole set without x, evaluated at x. That kernel is Gaussian on
L2-normalised features (median-distance bandwidth), as in Kim et al., not the reward's polynomial kernel: the
polynomial witness is a global cubic function of the features and ranked a planted black frame 36th of 617 on
CVC-ClinicDB, the Gaussian one 1st-2nd (docs/reference-advisor.md). With k(x, x) = 1 this witness is
(1 - leave-one-out kernel density) / n: the images that the rest of the set explains worst.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from alignflow.errors import InputError
from alignflow.rewards import mmd_unbiased, polynomial_kernel

QUANTILES = (0.1, 0.5, 0.9)  # the band shown for random subsets and for the noise floor
SMALL_SHIFT_FACTOR = 10.0  # a shift up to this many noise floors is "small"
OUTLIER_Z = 3.5  # robust z-score above which a criticism is called an outlier (Iglewicz & Hoaglin's cut-off)
MIN_IMAGES = 4  # the noise floor splits the set into halves of at least 2 (the unbiased MMD needs 2 per side)


# ---------------------------------------------------------------------------------------------------------- kernels
def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """The reward's polynomial kernel between all pairs of images, in float64 (sums over thousands of entries)."""
    features = features.double()
    return polynomial_kernel(features, features)


# The two estimators below score subsets through one precomputed Gram matrix instead of calling rewards.mmd on
# features: the k-curve and the noise floor score thousands of subsets. Tests check both against rewards.mmd.
def subset_mmd(gram: torch.Tensor, subset: Sequence[int] | torch.Tensor) -> float:
    """Biased MMD^2 between the images ``subset`` and the whole set (the prototype objective above)."""
    index = torch.as_tensor(subset, dtype=torch.long)
    return float(gram[index][:, index].mean() - 2.0 * gram[index].mean() + gram.mean())


def split_mmd(gram: torch.Tensor, a: Sequence[int] | torch.Tensor, b: Sequence[int] | torch.Tensor, *,
              unbiased: bool = True) -> float:
    """MMD^2 between two disjoint subsets of the images: unbiased (Eq. 9) or biased (diagonal terms kept)."""
    a, b = torch.as_tensor(a, dtype=torch.long), torch.as_tensor(b, dtype=torch.long)
    k_aa, k_bb = gram[a][:, a], gram[b][:, b]
    if not unbiased:
        return float(k_aa.mean() + k_bb.mean() - 2.0 * gram[a][:, b].mean())
    m, n = len(a), len(b)
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
    return float(within_a + within_b - 2.0 * gram[a][:, b].mean())


# ------------------------------------------------------------------------------------------------------- prototypes
def herd_prototypes(gram: torch.Tensor, count: int) -> tuple[list[int], list[float]]:
    """Greedy MMD-critic prototypes: ``count`` indices in pick order, and MMD^2(first k, all) for k = 1..count.

    Each step adds the image minimising MMD^2(S + {c}, X) over all candidates c at once, in O(n) from running sums.
    Ties go to the lowest index, so the result depends on the features only.
    """
    n = gram.shape[0]
    if not 1 <= count <= n:
        raise InputError("k", f"between 1 and {n} (the number of images)", str(count))
    mean_similarity = gram.mean(dim=1)  # (1/n) sum_j k(x_c, x_j): how well c stands for the whole set
    to_chosen = torch.zeros(n, dtype=gram.dtype)  # sum_{i in S} k(x_i, x_c) for every candidate c
    within_chosen = 0.0  # sum_{i, j in S} k(x_i, x_j)
    chosen_similarity = 0.0  # sum_{i in S} mean_similarity[i]
    available = torch.ones(n, dtype=torch.bool)
    picks, values = [], []
    for size in range(1, count + 1):
        within = within_chosen + 2.0 * to_chosen + gram.diagonal()
        objective = within / size**2 - 2.0 * (chosen_similarity + mean_similarity) / size
        objective[~available] = float("inf")
        pick = int(torch.argmin(objective))
        picks.append(pick)
        values.append(max(float(objective[pick] + gram.mean()), 0.0))  # >= 0 up to rounding
        within_chosen = float(within[pick])
        chosen_similarity += float(mean_similarity[pick])
        to_chosen += gram[:, pick]
        available[pick] = False
    return picks, values


# -------------------------------------------------------------------------------------------------------- criticisms
@dataclass
class Criticism:
    index: int
    witness: float  # w(x) of the whole set against the set without x; larger = explained worse
    robust_z: float  # how far its leave-one-out density lies below the median, in robust standard deviations
    outlier: bool  # robust_z > OUTLIER_Z


def outlier_witness(features: torch.Tensor) -> torch.Tensor:
    """MMD-critic witness of each image, whole set vs whole set without it, with the Gaussian kernel (see above)."""
    unit = torch.nn.functional.normalize(features.double(), dim=1)
    squared = torch.cdist(unit, unit).pow(2)
    n = unit.shape[0]
    off_diagonal = squared[~torch.eye(n, dtype=torch.bool)]
    bandwidth = float(off_diagonal.median()) if off_diagonal.numel() else 1.0
    kernel = torch.exp(-squared / max(bandwidth, 1e-12))
    leave_one_out_density = (kernel.sum(dim=1) - 1.0) / max(n - 1, 1)
    return (1.0 - leave_one_out_density) / n


def criticisms(features: torch.Tensor, count: int, exclude: Sequence[int] = ()) -> list[Criticism]:
    """The ``count`` images with the largest witness (prototypes in ``exclude`` are never criticisms)."""
    witness = outlier_witness(features)
    median = witness.median()
    spread = 1.4826 * (witness - median).abs().median()  # MAD scaled to a normal standard deviation
    z = (witness - median) / spread if spread > 0 else torch.zeros_like(witness)
    skip = set(exclude)
    order = [int(i) for i in torch.argsort(witness, descending=True, stable=True) if int(i) not in skip]
    return [Criticism(i, float(witness[i]), float(z[i]), bool(z[i] > OUTLIER_Z)) for i in order[:count]]


# -------------------------------------------------------------------------------------------------------- the curve
def k_grid(n: int, extra: Sequence[int] = ()) -> list[int]:
    """1, 2, 3, 5, 10, 20, 50, 100, 200, 500, ... below n (at n every subset is the whole set), plus ``extra``."""
    grid = {1, 2, 3, 5}
    decade = 10
    while decade < n:
        grid.update({decade, 2 * decade, 5 * decade})
        decade *= 10
    grid.update(extra)
    return sorted(k for k in grid if 1 <= k < n)


@dataclass
class Band:
    """Low (10 %), median and high (90 %) quantiles of a bootstrap distribution."""

    low: float
    median: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Band:
        low, median, high = np.quantile(np.asarray(values, dtype=np.float64), QUANTILES)
        return cls(float(low), float(median), float(high))


@dataclass
class CurvePoint:
    k: int
    chosen: float  # MMD^2(first k prototypes, all)
    random: Band  # MMD^2(random k-subset, all) over the draws


def random_subset_curve(gram: torch.Tensor, grid: Sequence[int], draws: int, rng: np.random.Generator) -> list[Band]:
    n = gram.shape[0]
    return [Band.of([subset_mmd(gram, rng.choice(n, size=k, replace=False)) for _ in range(draws)]) for k in grid]


# ------------------------------------------------------------------------------------------------------ noise floor
@dataclass
class NoiseFloor:
    """MMD^2 between two random halves of the target set: how much the target differs from itself.

    ``between_halves`` is the biased MMD^2, the scale of the k-curve: k picks are "enough" when they differ from the
    whole set no more than two random halves differ from each other (that is 4x the MMD^2 of a random half to the
    whole set, so random k-subsets reach it at about k = n / 5). ``between_halves_unbiased`` is Eq. 9, centred on 0,
    the scale of the source-vs-target verdict.
    """

    between_halves: Band
    between_halves_unbiased: Band
    splits: int
    group_size: int


def natural_key(name: str) -> list:
    """Sort key with numbers compared as numbers: frame 2 before frame 10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def random_halves(n: int, rng: np.random.Generator, group_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves; with ``group_size`` > 1, runs of that many consecutive images stay on one side.

    Consecutive video frames are near-duplicates, so random-frame halves understate how much a video dataset
    varies between sequences; splitting by runs of frames gives a more honest floor for such data.
    """
    groups = np.arange(n) // group_size
    shuffled = rng.permutation(groups.max() + 1)
    first = np.isin(groups, shuffled[: len(shuffled) // 2])
    return np.flatnonzero(first), np.flatnonzero(~first)


def noise_floor(gram: torch.Tensor, splits: int, rng: np.random.Generator, group_size: int = 1) -> NoiseFloor:
    n = gram.shape[0]
    if n < MIN_IMAGES:
        raise InputError("target images", f"at least {MIN_IMAGES} (the noise floor compares two halves)", str(n))
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or not 1 <= group_size <= max(1, n // 4):
        raise InputError("--group-size", f"between 1 and {max(1, n // 4)} (at least 2 groups per half)", repr(group_size))
    biased, unbiased = [], []
    for _ in range(splits):
        a, b = random_halves(n, rng, group_size)
        biased.append(split_mmd(gram, a, b, unbiased=False))
        unbiased.append(split_mmd(gram, a, b))
    return NoiseFloor(Band.of(biased), Band.of(unbiased), splits, group_size)


def enough_k(chosen: Sequence[float], floor: NoiseFloor) -> int | None:
    """The smallest k whose picks differ from the whole set no more than two random halves do (median split)."""
    return next((k for k, value in enumerate(chosen, start=1) if value <= floor.between_halves.median), None)


# ---------------------------------------------------------------------------------------------------------- verdict
@dataclass
class ShiftVerdict:
    mmd: float  # unbiased MMD^2 (Eq. 9) between source and target features: the reward at the start of stage 2
    noise: float  # the 90 % quantile of the target's half-to-half MMD^2
    ratio: float | None  # mmd / noise
    verdict: str  # "within noise", "small shift" or "large shift"
    explanation: str


def shift_verdict(source: torch.Tensor, target: torch.Tensor, floor: NoiseFloor) -> ShiftVerdict:
    """Source-vs-target MMD against the target's own noise floor, in plain words.

    within noise: MMD^2 <= the 90 % quantile of MMD^2 between random halves of the target;
    small shift: up to SMALL_SHIFT_FACTOR times that; large shift: more.
    """
    if source.shape[0] < 2:
        raise InputError("--source", "at least 2 source images (the unbiased MMD needs 2 per side)", str(source.shape[0]))
    mmd = float(mmd_unbiased(source.double(), target.double()))
    noise = floor.between_halves_unbiased.high
    ratio = mmd / noise if noise > 0 else None
    # A zero floor means identical target images; any positive MMD is then beyond it.
    times = f"{ratio:.1f}x" if ratio is not None else "more than"
    if mmd <= noise:
        verdict = "within noise"
        explanation = ("the source differs from the target no more than two random halves of the target differ from "
                       "each other: stage 2 (alignment) is unlikely to help")
    elif ratio is not None and ratio <= SMALL_SHIFT_FACTOR:
        verdict = "small shift"
        explanation = (f"the source differs from the target by {times} the target's own noise floor: alignment "
                       "may help a little; check the result on held-out target images")
    else:
        verdict = "large shift"
        explanation = (f"the source differs from the target by {times} the target's own noise floor: "
                       "alignment (stage 2) is worth running")
    return ShiftVerdict(mmd, noise, ratio, verdict, explanation)
