"""STAPLE fusion of an ensemble of label maps (Warfield et al. 2004, the paper's ref. [29]) via SimpleITK.

SimpleITK's ``MultiLabelSTAPLEImageFilter`` runs the EM (binary masks are the two-label case) and returns the fused
labels and each rater's confusion matrix theta_r[observed, true], but not the per-pixel posterior. The posterior is
recomputed here from those estimates, the E-step of STAPLE:

    W(x, l) = prior(l) prod_r theta_r[d_r(x), l] / sum_l' prior(l') prod_r theta_r[d_r(x), l'],

with the priors set explicitly to the label frequencies over all samples (ITK's own default), so every number in
the formula is known. Two degenerate cases are handled here:

* all samples agree everywhere: the EM is skipped, the posterior is one-hot;
* pixels where every label has zero likelihood (ITK leaves them "undecided": with confusion matrices estimated as
  perfect, a pixel where the samples disagree has no consistent truth). Their posterior is the vote fraction and
  their label the majority vote, the limit of STAPLE when all raters are equally reliable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from alignflow.errors import InputError

_UNDECIDED = 255  # label ITK writes where no label wins; above every class id (at most 254)
# ITK iterates until the estimates change by < 1e-5. Ensembles of a trained model converge long before this cap;
# near-random ones (an untrained model) can take thousands of iterations, 10 s for one 256-px image of 4 samples.
MAX_ITERATIONS = 100


@dataclass
class StapleResult:
    labels: np.ndarray  # [H, W] uint8, fused class ids
    posterior: np.ndarray  # [K, H, W] float32, W(x, l); sums to 1 over l
    confusion: np.ndarray  # [M, K, K] float32, theta_r[observed, true] per sample (zeros where ITK had no label)


def vote_fractions(samples: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of samples voting for each class, [K, H, W] float32."""
    return np.stack([(samples == k).mean(axis=0) for k in range(num_classes)]).astype(np.float32)


def _check_samples(samples: np.ndarray, num_classes: int) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim != 3 or samples.shape[0] < 1 or not np.issubdtype(samples.dtype, np.integer):
        raise InputError("samples", "an integer array [M, H, W] of M >= 1 label maps", f"{samples.dtype} of shape {samples.shape}")
    if not 2 <= num_classes <= _UNDECIDED:
        raise InputError("num_classes", f"2..{_UNDECIDED}", str(num_classes))
    if samples.size and (samples.min() < 0 or samples.max() >= num_classes):
        raise InputError("samples", f"class ids in 0..{num_classes - 1}", f"{samples.min()}..{samples.max()}")
    return samples.astype(np.uint8)


def staple(samples: np.ndarray, num_classes: int) -> StapleResult:
    """Fuse M label maps [M, H, W] of class ids 0..K-1 into one map, with its posterior and the raters' estimates."""
    samples = _check_samples(samples, num_classes)
    count = samples.shape[0]
    if (samples == samples[0]).all():
        identity = np.broadcast_to(np.eye(num_classes, dtype=np.float32), (count, num_classes, num_classes)).copy()
        return StapleResult(samples[0].copy(), vote_fractions(samples[:1], num_classes), identity)

    present = int(samples.max()) + 1  # ITK's label count: highest label in the inputs + 1
    frequencies = np.bincount(samples.ravel(), minlength=present)[:present] / samples.size
    fuse = sitk.MultiLabelSTAPLEImageFilter()
    fuse.SetLabelForUndecidedPixels(_UNDECIDED)
    fuse.SetMaximumNumberOfIterations(MAX_ITERATIONS)
    fuse.SetPriorProbabilities([float(p) for p in frequencies])
    fused = sitk.GetArrayFromImage(fuse.Execute([sitk.GetImageFromArray(s) for s in samples]))
    # ITK's matrix has one extra row (observed "undecided") that never occurs in our inputs.
    theta = np.stack([np.asarray(fuse.GetConfusionMatrix(r)).reshape(present + 1, present)[:present] for r in range(count)])

    posterior, decided = _posterior(samples, theta, frequencies)
    votes = vote_fractions(samples, present)
    posterior = np.where(decided[None], posterior, votes)
    labels = np.where(fused == _UNDECIDED, posterior.argmax(axis=0), fused).astype(np.uint8)

    full_posterior = np.zeros((num_classes, *samples.shape[1:]), np.float32)
    full_posterior[:present] = posterior
    confusion = np.zeros((count, num_classes, num_classes), np.float32)
    confusion[:, :present, :present] = theta
    return StapleResult(labels, full_posterior, confusion)


def _posterior(samples: np.ndarray, theta: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E-step of STAPLE in log space: W [L, H, W] and where it is defined (some label has non-zero likelihood)."""
    with np.errstate(divide="ignore"):
        log_theta = np.log(theta.astype(np.float64))  # [M, observed, true]
        log_w = np.log(prior.astype(np.float64))[:, None, None] + sum(
            np.moveaxis(log_theta[r][samples[r]], -1, 0) for r in range(samples.shape[0])
        )
    top = log_w.max(axis=0)
    decided = np.isfinite(top)
    weights = np.exp(log_w - np.where(decided, top, 0.0)[None])
    weights /= np.maximum(weights.sum(axis=0, keepdims=True), 1e-300)
    return weights.astype(np.float32), decided
