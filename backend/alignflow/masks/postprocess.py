"""Post-processing of raw generated masks into clean class-id masks (paper Section 3.3, issue 3).

A raw generated mask is a float grey map ``[H, W]`` in about [0, 1] where class c of K is drawn at c / (K - 1)
(the rendering of :func:`alignflow.data.mask_to_rgb`), or per-class scores ``[K, H, W]`` (argmax semantics). The
chain, in this order, each step with its own switch:

1. **threshold** (always on: it turns floats into ids). Level set "class >= c" is ``value >= (c - 1 + threshold)
   / (K - 1)``: binary masks are foreground where ``value >= threshold``, and the default 0.5 snaps multi-class
   values to the nearest class level. Values outside the valid range by more than ``tolerance`` level spacings, and
   NaN, are *invalid* and become background (``remove_invalid``; when off, out-of-range values are clipped to the
   nearest end class, NaN is still background). Scores skip this: argmax, non-finite pixels background.
2. **blur** (``sigma``, 0 = off): Gaussian blur of each level set, re-thresholded at 0.5, smoothing jagged edges.
   The 0.5 is not ``threshold``: a blurred indicator's 0.5 level is the smoothed boundary, moving it would grow or
   shrink every mask.
3. **opening** (``opening_radius``, 0 = off) removes foreground specks, then **closing** (``closing_radius``,
   0 = off) removes background specks; both with a disk.
4. **min_area** (0 = off) removes 8-connected components smaller than this many pixels, then **fill_holes**
   (bool) fills background enclosed by foreground.

Multi-class masks go through the chain as K - 1 binary planes. With ``nested`` (default) plane c is the level set
"class >= c", for classes that lie inside one another like Drishti-GS's cup (2) inside the disc (rim 1 + cup 2):
every step is an increasing operator, so processed level sets stay nested and the cup stays inside the disc; the
nesting is re-imposed after each step anyway, because float rounding of blurred values next to 0.5 could break it.
Without ``nested`` plane c is "class == c", processed on its own; where processed planes overlap the higher class
wins, and pixels no plane claims are background. Either way every output id is in 0..K-1.

Two implementations share this code: ``"fast"`` (default, :mod:`alignflow.masks.morphology`, a few milliseconds
per 512 x 512 mask) and ``"scikit-image"``, the plain library calls, kept as the reference that the fast path is
tested and benchmarked against (benchmarks/mask_postprocess.py); both give identical masks.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import skimage.filters
import skimage.measure
import skimage.morphology

from alignflow.config import DictConfig
from alignflow.errors import InputError
from alignflow.masks import morphology

STEP_NAMES: tuple[str, ...] = ("threshold", "blur", "opening", "closing", "min_area", "fill_holes")
IMPLEMENTATIONS: tuple[str, ...] = ("fast", "scikit-image")
MAX_CLASSES = 255  # output ids are uint8


@dataclass
class PostprocessConfig(DictConfig):
    """Parameters of the chain; each step but the threshold has a value that switches it off (see module doc)."""

    config_name = "postprocess config"
    validate_on_load = True

    num_classes: int = 2  # K, background included
    threshold: float = 0.5  # in (0, 1); 0.5 = nearest class level
    tolerance: float = 0.25  # how far outside [0, 1] a value may lie and still count, in level spacings 1 / (K - 1)
    remove_invalid: bool = True  # out-of-range values -> background (else clipped to the nearest end class)
    sigma: float = 1.0  # Gaussian blur in pixels; 0 = off
    opening_radius: int = 1  # disk radius in pixels; 0 = off
    closing_radius: int = 1  # disk radius in pixels; 0 = off
    min_area: int = 16  # pixels; smaller components are removed; 0 = off
    fill_holes: bool = True
    nested: bool = True  # classes lie inside one another (class c inside class c - 1), e.g. cup inside disc

    def validate(self) -> None:
        _check_num_classes(self.num_classes)
        _require_number(self.threshold, "threshold", "a number strictly between 0 and 1", lambda v: 0.0 < v < 1.0)
        _require_number(self.tolerance, "tolerance", "a non-negative number of level spacings", lambda v: v >= 0.0)
        _require_number(self.sigma, "sigma", "a non-negative blur in pixels (0 = off)", lambda v: v >= 0.0)
        for name in ("opening_radius", "closing_radius"):
            _require_int(getattr(self, name), name, 0, None, "a non-negative integer radius in pixels (0 = off)")
        _require_int(self.min_area, "min_area", 0, None, "a non-negative integer area in pixels (0 = off)")
        for name in ("remove_invalid", "fill_holes", "nested"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InputError(name, "true or false", repr(getattr(self, name)))


def _require_number(value: Any, name: str, expected: str, allowed: Callable[[float], bool]) -> None:
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or not allowed(float(value)):
        raise InputError(name, expected, repr(value))


def _require_int(value: Any, name: str, minimum: int, maximum: int | None, expected: str) -> None:
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_int or value < minimum or (maximum is not None and value > maximum):
        raise InputError(name, expected, repr(value))


# --------------------------------------------------------------------------------------------------------------
# Per-plane operations: the fast ones and the scikit-image reference
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PlaneOperations:
    smooth: Callable[[np.ndarray, float], np.ndarray]
    opening: Callable[[np.ndarray, int], np.ndarray]
    closing: Callable[[np.ndarray, int], np.ndarray]
    remove_small: Callable[[np.ndarray, int], np.ndarray]
    fill_holes: Callable[[np.ndarray], np.ndarray]


def _skimage_binary(name: str, fallback: str) -> Callable[[np.ndarray, int], np.ndarray]:
    """skimage's ``binary_opening``/``binary_closing`` (deprecated in 0.26, faster than the grey ``opening``
    that replaces them), falling back to the replacement once they are removed; same result, mode ``ignore``."""
    def apply(mask: np.ndarray, radius: int) -> np.ndarray:
        footprint = skimage.morphology.disk(radius)
        if hasattr(skimage.morphology, name):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return getattr(skimage.morphology, name)(mask, footprint)
        return getattr(skimage.morphology, fallback)(mask, footprint, mode="ignore")

    return apply


_FAST = _PlaneOperations(
    smooth=morphology.smooth,
    opening=morphology.opening,
    closing=morphology.closing,
    remove_small=morphology.remove_small_components,
    fill_holes=morphology.fill_holes,
)
_SCIKIT_IMAGE = _PlaneOperations(
    smooth=lambda mask, sigma: skimage.filters.gaussian(mask, sigma) >= 0.5,
    opening=_skimage_binary("binary_opening", "opening"),
    closing=_skimage_binary("binary_closing", "closing"),
    remove_small=lambda mask, area: skimage.morphology.remove_small_objects(mask, max_size=area - 1, connectivity=2),
    fill_holes=ndi.binary_fill_holes,
)


def _operations(implementation: str) -> _PlaneOperations:
    if implementation == "fast":
        return _FAST
    if implementation == "scikit-image":
        return _SCIKIT_IMAGE
    raise InputError("implementation", f"one of {', '.join(IMPLEMENTATIONS)}", repr(implementation))


# --------------------------------------------------------------------------------------------------------------
# The chain
# --------------------------------------------------------------------------------------------------------------


def _check_raw(raw: Any, config: PostprocessConfig, where: str) -> np.ndarray:
    array = np.asarray(raw)
    expected = f"a float grey mask [H, W] or class scores [{config.num_classes}, H, W]"
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(where, expected, f"dtype {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[0] == config.num_classes):
        if min(array.shape) < 1:
            raise InputError(where, expected, f"an empty array of shape {array.shape}")
        return array
    raise InputError(where, expected, f"shape {array.shape}")


def _threshold_planes(raw: np.ndarray, config: PostprocessConfig) -> list[np.ndarray]:
    """Step 1: the K - 1 boolean planes (level sets "class >= c", or "class == c" without ``nested``)."""
    num_levels = config.num_classes - 1
    if raw.ndim == 3:  # class scores
        ids = raw.argmax(axis=0)
        ids[~np.isfinite(raw).all(axis=0)] = 0
        level_sets = [ids >= c for c in range(1, config.num_classes)]
    else:
        spacing = 1.0 / num_levels
        level_sets = [raw >= (c - 1 + config.threshold) * spacing for c in range(1, config.num_classes)]
        if config.remove_invalid:
            margin = config.tolerance * spacing
            valid = (raw >= -margin) & (raw <= 1.0 + margin)  # False for NaN too
            for level_set in level_sets:
                level_set &= valid
    if config.nested:
        return level_sets
    return [level_sets[i] & ~level_sets[i + 1] for i in range(num_levels - 1)] + [level_sets[-1]]


def _planes_to_ids(planes: list[np.ndarray]) -> np.ndarray:
    """Class ids ``uint8 [H, W]``: plane c (counted from 1) paints class c over the lower ones."""
    ids = np.zeros(planes[0].shape, dtype=np.uint8)
    for class_id, plane in enumerate(planes, start=1):
        ids[plane] = class_id
    return ids


_PlaneStep = Callable[[np.ndarray], np.ndarray]


def _enabled_steps(config: PostprocessConfig, ops: _PlaneOperations) -> list[tuple[str, _PlaneStep]]:
    candidates = [
        ("blur", config.sigma > 0, lambda plane: ops.smooth(plane, config.sigma)),
        ("opening", config.opening_radius > 0, lambda plane: ops.opening(plane, config.opening_radius)),
        ("closing", config.closing_radius > 0, lambda plane: ops.closing(plane, config.closing_radius)),
        ("min_area", config.min_area > 1, lambda plane: ops.remove_small(plane, config.min_area)),
        ("fill_holes", bool(config.fill_holes), ops.fill_holes),
    ]
    return [(name, step) for name, enabled, step in candidates if enabled]


def _run_chain(
    raw: Any, config: PostprocessConfig, implementation: str, where: str
) -> Iterator[tuple[str, list[np.ndarray]]]:
    config.validate()
    ops = _operations(implementation)
    planes = _threshold_planes(_check_raw(raw, config, where), config)
    yield "threshold", planes
    for name, step in _enabled_steps(config, ops):
        planes = [step(plane) for plane in planes]
        if config.nested:
            for inner, outer in zip(planes[1:], planes[:-1]):
                inner &= outer
        yield name, planes


def postprocess_steps(
    raw: Any, config: PostprocessConfig, *, implementation: str = "fast"
) -> list[tuple[str, np.ndarray]]:
    """The class ids ``uint8 [H, W]`` after each enabled step, named as in :data:`STEP_NAMES` (for pictures)."""
    return [(name, _planes_to_ids(planes)) for name, planes in _run_chain(raw, config, implementation, "raw")]


def postprocess_mask(raw: Any, config: PostprocessConfig, *, implementation: str = "fast") -> np.ndarray:
    """One raw mask (grey ``[H, W]`` or scores ``[K, H, W]``, float) -> clean class ids ``uint8 [H, W]``."""
    return _final_ids(raw, config, implementation, "raw")


def _final_ids(raw: Any, config: PostprocessConfig, implementation: str, where: str) -> np.ndarray:
    *_, (_, planes) = _run_chain(raw, config, implementation, where)
    return _planes_to_ids(planes)


def postprocess_masks(raws: Any, config: PostprocessConfig, *, implementation: str = "fast") -> np.ndarray:
    """A batch: grey ``[N, H, W]`` or scores ``[N, K, H, W]`` (float) -> class ids ``uint8 [N, H, W]``."""
    array = np.asarray(raws)
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[1] != config.num_classes):
        expected = f"a batch of float grey masks [N, H, W] or class scores [N, {config.num_classes}, H, W]"
        raise InputError("raws", expected, f"shape {array.shape}")
    if len(array) == 0:
        config.validate()
        return np.zeros((0, *array.shape[-2:]), dtype=np.uint8)
    return np.stack([_final_ids(raw, config, implementation, f"raws[{i}]") for i, raw in enumerate(array)])


# --------------------------------------------------------------------------------------------------------------
# Shape statistics of real vs generated masks
# --------------------------------------------------------------------------------------------------------------


def _check_num_classes(num_classes: Any) -> None:
    _require_int(num_classes, "num_classes", 2, MAX_CLASSES, f"an integer number of classes in 2..{MAX_CLASSES}")


def mask_statistics(masks: Any, num_classes: int) -> dict[str, Any]:
    """Shape statistics of class-id masks ``[N, H, W]``, to compare generated masks with real ones.

    Returns ``num_masks``, ``empty_fraction`` (masks that are all background) and, per class c >= 1 in
    ``classes[c]``: ``present_fraction`` (masks containing c), ``multi_component_fraction`` (masks where class c
    forms more than one 8-connected component, over all masks) and ``roughness_mean``, the mean over masks containing
    c of the isoperimetric ratio perimeter^2 / (4 pi area) of the class's pixels (1 for a disc, higher for ragged or
    fragmented shapes; ``skimage.measure.perimeter``, which gives about 1.1 for a digital disc and 0 for a single
    pixel); None when no mask contains c.
    """
    _check_num_classes(num_classes)
    array = np.asarray(masks)
    if array.ndim != 3 or not np.issubdtype(array.dtype, np.integer):
        raise InputError("masks", "an integer array of class ids [N, H, W]", f"{array.dtype} of shape {array.shape}")
    if array.size and (int(array.min()) < 0 or int(array.max()) >= num_classes):
        got = f"values {int(array.min())}..{int(array.max())}"
        raise InputError("masks", f"class ids in 0..{num_classes - 1}", got)
    count = len(array)
    classes: dict[int, dict[str, float | None]] = {}
    for class_id in range(1, num_classes):
        present = multi = 0
        ratios = []
        for mask in array:
            region = mask == class_id
            area = int(region.sum())
            if area == 0:
                continue
            present += 1
            _, components = ndi.label(region, structure=morphology.COMPONENT_STRUCTURE)
            multi += components > 1
            ratios.append(skimage.measure.perimeter(region) ** 2 / (4.0 * math.pi * area))
        classes[class_id] = {
            "present_fraction": present / count if count else None,
            "multi_component_fraction": multi / count if count else None,
            "roughness_mean": float(np.mean(ratios)) if ratios else None,
        }
    empty = int(sum(not mask.any() for mask in array))
    return {"num_masks": count, "empty_fraction": empty / count if count else None, "classes": classes}


def raw_invalid_fraction(raws: Any, num_classes: int, tolerance: float = 0.25) -> float:
    """Fraction of raw float pixels (any shape) farther than ``tolerance`` level spacings from every class level.

    Levels are c / (K - 1); NaN and infinite values count as off-level. This is the "fraction of invalid pixel
    values" of a raw generated mask: 0 for a clean rendering, larger for blurry edges, noise and out-of-range values.
    """
    _check_num_classes(num_classes)
    _require_number(tolerance, "tolerance", "a number of level spacings in [0, 0.5)", lambda v: 0.0 <= v < 0.5)
    array = np.asarray(raws)
    if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
        raise InputError("raws", "a non-empty float array of grey levels", f"{array.dtype} of shape {array.shape}")
    with np.errstate(invalid="ignore"):
        position = array.astype(np.float64) * (num_classes - 1)
        distance = np.abs(position - np.clip(np.rint(position), 0, num_classes - 1))
        off = ~(distance <= tolerance)  # NaN and inf compare False
    return float(off.mean())
