"""The reference advisor's engine function: picks, outliers, the k-curve and the shift verdict for a target folder.

Called by ``alignflow advise-references`` and meant for the plugin's "Suggest references" button: plain arguments,
a progress callback, a dataclass result (``Advice.to_dict()`` is the JSON report).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignflow.advisor.features import Features, Image, extract_features, image_files
from alignflow.advisor.report import write_report
from alignflow.advisor.selection import (
    MIN_IMAGES,
    OUTLIER_Z,
    SMALL_SHIFT_FACTOR,
    Criticism,
    CurvePoint,
    NoiseFloor,
    ShiftVerdict,
    criticisms,
    enough_k,
    gram_matrix,
    herd_prototypes,
    k_grid,
    natural_key,
    noise_floor,
    random_subset_curve,
    shift_verdict,
)
from alignflow.errors import InputError
from alignflow.models.feature_encoders import DEFAULT_ENCODER, build_feature_encoder
from alignflow.progress import ProgressCallback

Images = Path | str | Sequence[Path | str] | Sequence[np.ndarray]


@dataclass
class ImageSet:
    """What the user gave: a folder, files or arrays, resolved to a list the features and thumbnails both use."""

    items: list[Image]
    names: list[str]
    folder: str | None

    @property
    def paths(self) -> list[str]:
        return [str(item) if not isinstance(item, np.ndarray) else name for item, name in zip(self.items, self.names)]


def resolve_images(images: Images, names: Sequence[str] | None, parameter: str) -> ImageSet:
    """A folder (or dataset folder with images/) in natural order (frame 2 before 10), files, or uint8 RGB arrays."""
    if isinstance(images, (str, Path)):
        files = sorted(image_files(images), key=lambda p: natural_key(p.name))
        return ImageSet(list(files), [p.name for p in files], str(images))
    items = list(images)
    if not items:
        raise InputError(parameter, "a folder, image files or image arrays", "nothing")
    if all(isinstance(item, np.ndarray) for item in items):
        labels = list(names) if names is not None else [f"image {i + 1}" for i in range(len(items))]
        if len(labels) != len(items):
            raise InputError("names", f"one name per image ({len(items)})", str(len(labels)))
        return ImageSet(items, labels, None)
    files = image_files([Path(item) for item in items])  # type: ignore[arg-type]
    return ImageSet(list(files), [p.name for p in files], None)


@dataclass
class Advice:
    target: dict[str, Any]
    k: int
    picks: list[dict[str, Any]]
    references: list[str]
    enough_k: int | None
    curve: list[CurvePoint]
    chosen_mmd: list[float]  # MMD^2(first k picks, all) for k = 1, 2, ...
    noise_floor: NoiseFloor
    outliers: list[dict[str, Any]]
    shift: ShiftVerdict | None
    source: dict[str, Any] | None
    settings: dict[str, Any]
    seconds: dict[str, float]
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_k(k: int, count: int, where: str | None) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError("--k", "a number of references of at least 1", repr(k))
    if k > count:
        raise InputError("--k", f"at most {count}, the number of images in {where or 'the target set'}", str(k))


def advise_references(
    target: Images,
    k: int = 10,
    *,
    source: Images | None = None,
    out: Path | str | None = None,
    names: Sequence[str] | None = None,
    resolution: int = 128,
    feature_encoder: str = DEFAULT_ENCODER,
    num_outliers: int = 8,
    draws: int = 200,
    splits: int = 100,
    group_size: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    cache_dir: Path | str | None = None,
    use_cache: bool = True,
    on_progress: ProgressCallback | None = None,
) -> Advice:
    """Advise which ``k`` target images to use as stage-2 references; with ``source``, say whether to align at all.

    ``target``/``source``: a folder (or a dataset folder with ``images/``), image files, or uint8 H x W x 3 arrays
    (``names`` labels them). ``resolution`` must be the generator's, since the reward sees references at that size.
    ``group_size`` > 1 keeps runs of consecutive images (video frames, in natural file order) on one side of the
    noise-floor halves. With ``out``, writes the JSON report, the k-curve plot, the thumbnail sheet and the
    reference list there (:mod:`alignflow.advisor.report`). ``on_progress(stage, done, total)`` reports progress.
    """
    started = time.perf_counter()
    progress = on_progress or (lambda stage, done, total: None)
    targets = resolve_images(target, names, "target")
    _check_k(k, len(targets.items), targets.folder)
    if len(targets.items) < MIN_IMAGES:
        raise InputError(targets.folder or "target", f"at least {MIN_IMAGES} images (the noise floor compares two halves)",
                         str(len(targets.items)))
    for name, value, low in (("--resolution", resolution, 8), ("--outliers", num_outliers, 0), ("--draws", draws, 1),
                             ("--splits", splits, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(name, f"an integer of at least {low}", repr(value))
    sources = resolve_images(source, None, "--source") if source is not None else None

    encoder = functools.cache(lambda: build_feature_encoder(feature_encoder, device))  # once, and only on a cache miss

    def features_of(images: ImageSet, stage: str) -> Features:
        return extract_features(images.items, resolution=resolution, encoder_name=feature_encoder, build_encoder=encoder,
                                cache_dir=cache_dir, use_cache=use_cache, names=images.names,
                                on_progress=lambda _, done, total: progress(stage, done, total))

    target_features = features_of(targets, "target features")
    source_features = features_of(sources, "source features") if sources is not None else None
    features_done = time.perf_counter()

    progress("selection", 0, 1)
    rng = np.random.default_rng(seed)
    gram = gram_matrix(target_features.values)
    n = len(targets.items)
    grid = k_grid(n, [k])
    order, chosen = herd_prototypes(gram, max([k, *grid]))
    bands = random_subset_curve(gram, grid, draws, rng)
    floor = noise_floor(gram, splits, rng, group_size)
    critics = criticisms(target_features.values, num_outliers, exclude=order[:k])
    shift = shift_verdict(source_features.values, target_features.values, floor) if source_features is not None else None
    progress("selection", 1, 1)

    advice = Advice(
        target={"folder": targets.folder, "count": n, "images": targets.paths},
        k=int(k),
        picks=[{"rank": rank + 1, "index": i, "name": targets.names[i], "mmd_after": chosen[rank]} for rank, i in enumerate(order[:k])],
        references=[targets.paths[i] for i in order[:k]],
        enough_k=enough_k(chosen, floor),
        curve=[CurvePoint(size, chosen[size - 1], band) for size, band in zip(grid, bands)],
        chosen_mmd=chosen,
        noise_floor=floor,
        outliers=[_criticism_entry(c, targets) for c in critics],
        shift=shift,
        source=None if sources is None else {"folder": sources.folder, "count": len(sources.items)},
        settings={"resolution": resolution, "feature_encoder": feature_encoder, "kernel": "polynomial, degree 3, c = 1 (Eq. 8)",
                  "outlier_kernel": "Gaussian on L2-normalised features, median-distance bandwidth",
                  "seed": seed, "draws": draws, "splits": splits, "group_size": group_size,
                  "outlier_z": OUTLIER_Z, "small_shift_factor": SMALL_SHIFT_FACTOR,
                  "features_cached": target_features.cached + (source_features.cached if source_features else 0),
                  "features_computed": target_features.computed + (source_features.computed if source_features else 0)},
        seconds={"features": round(features_done - started, 2), "selection": round(time.perf_counter() - features_done, 2)},
    )
    advice.seconds["total"] = round(time.perf_counter() - started, 2)  # before the report, so the JSON has it
    if out is not None:
        progress("report", 0, 1)
        write_report(advice, targets, Path(out))
        progress("report", 1, 1)
    return advice


def _criticism_entry(critic: Criticism, images: ImageSet) -> dict[str, Any]:
    return {"index": critic.index, "name": images.names[critic.index], "path": images.paths[critic.index],
            "witness": critic.witness, "robust_z": critic.robust_z, "outlier": critic.outlier}
