"""How often each set of pairs enters a training pool, so that a uniform draw gives each set the share it should have.

Two users of the same rule: ``evaluate-segmentation`` (several ``--synthetic`` folders, each an equal share of the
synthetic draws) and ``export --synthetic-share`` (copies in the exported dataset, because nnU-Net and most training
loops draw cases uniformly and have no per-case weights). Torch-free, so the export does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping

from alignflow.errors import InputError

# The largest number of copies of the real pairs or of the added pool that export_copies tries, and how close to the
# asked share is close enough: within it the smallest export wins (a share of 0.26 for 0.25 is not worth 3x the files).
MAX_COPIES = 50
SHARE_TOLERANCE = 0.01


def equal_share_repeats(sizes: list[int]) -> list[int]:
    """How many times to repeat each of several sets so that each holds about as many pairs as the largest."""
    return [-(-max(sizes) // size) for size in sizes] if len(sizes) > 1 else [1] * len(sizes)


def export_copies(real_pairs: int, added: Mapping[str, int], share: float) -> tuple[int, dict[str, int], float]:
    """Copies of the real pairs and of each added set (by name: generated sets, labelled target pairs) such that the
    added sets make ``share`` of the cases, each an equal part of it (``equal_share_repeats``), as closely as whole
    numbers of copies up to MAX_COPIES allow (the smallest export within SHARE_TOLERANCE of it). Returns (real copies, copies per added set, the share reached)."""
    if not 0.0 < share < 1.0:
        raise InputError("--synthetic-share", "a fraction in (0, 1): the part of the exported cases that are not real source pairs",
                         str(share))
    if real_pairs < 1 or not added or min(added.values()) < 1:
        raise InputError("--synthetic-share", "real pairs (--real) and at least one non-empty set to add (--synthetic or --target)",
                         f"{real_pairs} real pair(s), added sets {dict(added)}")
    repeats = dict(zip(added, equal_share_repeats(list(added.values()))))
    pool = sum(added[name] * repeats[name] for name in added)

    def reached(real_copies: int, pool_copies: int) -> float:
        return pool * pool_copies / (pool * pool_copies + real_pairs * real_copies)

    candidates = [(r, p) for r in range(1, MAX_COPIES + 1) for p in range(1, MAX_COPIES + 1)]
    close = [rp for rp in candidates if abs(reached(*rp) - share) <= SHARE_TOLERANCE]
    if close:
        real_copies, pool_copies = min(close, key=lambda rp: rp[0] * real_pairs + rp[1] * pool)
    else:
        real_copies, pool_copies = min(candidates, key=lambda rp: abs(reached(*rp) - share))
    return real_copies, {name: repeats[name] * pool_copies for name in added}, reached(real_copies, pool_copies)
