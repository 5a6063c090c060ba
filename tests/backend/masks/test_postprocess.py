"""Mask post-processing chain: each step on hand-made masks with known answers, multi-class validity on real
Drishti-GS masks, the fast path against the scikit-image reference, shape statistics and parameter errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.morphology as skm
from skimage.measure import perimeter

from alignflow.data import read_mask
from alignflow.errors import InputError
from alignflow.masks import morphology
from alignflow.masks.postprocess import (
    STEP_NAMES,
    PostprocessConfig,
    mask_statistics,
    postprocess_mask,
    postprocess_masks,
    postprocess_steps,
    raw_invalid_fraction,
)

ALL_OFF = PostprocessConfig(sigma=0.0, opening_radius=0, closing_radius=0, min_area=0, fill_holes=False)


def only(**changes) -> PostprocessConfig:
    """The chain with every optional step off except those given."""
    return replace(ALL_OFF, **changes)


def disc(size: int, center: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def grey(ids: np.ndarray, num_classes: int = 2) -> np.ndarray:
    return ids.astype(np.float32) / (num_classes - 1)


def corrupt(ids: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Generator-like raw grey mask: soft edges, blotchy noise that makes edges ragged, speckle, off-range values."""
    raw = ndi.gaussian_filter(grey(ids, num_classes), 1.0)
    spacing = 1.0 / (num_classes - 1)
    raw += ndi.gaussian_filter(rng.normal(0.0, 0.5 * spacing, ids.shape), 1.0)
    raw += rng.normal(0.0, 0.1 * spacing, ids.shape)
    speckle = rng.random(ids.shape) < 0.003
    raw[speckle] = rng.uniform(-0.4, 1.4, int(speckle.sum()))
    return raw.astype(np.float32)


def real_masks(folder: Path, count: int, step: int = 1) -> list[np.ndarray]:
    return [read_mask(path) for path in sorted((folder / "masks").iterdir())[: count * step : step]]


# ------------------------------------------------------------------------------------------------------------
# Each step on a hand-made mask with a known answer
# ------------------------------------------------------------------------------------------------------------


def test_opening_removes_bright_speck_and_keeps_the_shape() -> None:
    ids = np.zeros((64, 64), np.uint8)
    ids[10:40, 10:40] = 1
    ids[50:52, 50:52] = 1  # a 2 x 2 speck
    out = postprocess_mask(grey(ids), only(opening_radius=2))
    assert not out[48:54, 48:54].any()
    assert not out[ids == 0].any() and out[10:40, 10:40].sum() >= 900 - 4 * 3  # only the square's corners go


def test_closing_removes_dark_speck() -> None:
    ids = np.zeros((64, 64), np.uint8)
    ids[10:50, 10:50] = 1
    ids[30, 30] = ids[20, 21] = 0
    out = postprocess_mask(grey(ids), only(closing_radius=1))
    expected = np.zeros_like(ids)
    expected[10:50, 10:50] = 1
    np.testing.assert_array_equal(out, expected)


def test_fill_holes_fills_enclosed_background_only() -> None:
    ring = disc(80, (40, 40), 25) & ~disc(80, (40, 40), 12)
    ids = ring.astype(np.uint8)
    ids[:, 75:] = 1  # a bar touching the border: the gap between it and the ring is not a hole
    out = postprocess_mask(grey(ids), only(fill_holes=True))
    np.testing.assert_array_equal(out.astype(bool), ring | disc(80, (40, 40), 12) | (ids == 1))
    assert not out[40, 70]


def test_min_area_removes_components_smaller_than_it() -> None:
    ids = np.zeros((40, 40), np.uint8)
    ids[2:12, 2:12] = 1  # 100 pixels
    ids[20:25, 20:30] = 1  # 50 pixels
    ids[30:32, 30:33] = 1  # 6 pixels
    ids[35, 35] = ids[36, 36] = 1  # 2 pixels, 8-connected: one component
    kept = postprocess_mask(grey(ids), only(min_area=50))
    assert kept[2:12, 2:12].all() and kept[20:25, 20:30].all()
    assert kept.sum() == 150
    assert postprocess_mask(grey(ids), only(min_area=2))[35:37, 35:37].sum() == 2  # diagonal pair survives


def test_blur_smooths_a_jagged_edge_and_keeps_the_shape() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :128]
    angle = np.arctan2(yy - 64, xx - 64)
    jag = rng.uniform(-3, 3, 360)[((angle + np.pi) / (2 * np.pi) * 359).astype(int)]  # a new radius each degree
    jagged = np.hypot(yy - 64, xx - 64) <= 40 + jag
    out = postprocess_mask(grey(jagged), only(sigma=2.0)).astype(bool)
    assert perimeter(out) < 0.85 * perimeter(jagged)
    changed = out ^ jagged
    assert changed.any() and np.all(np.abs(np.hypot(yy - 64, xx - 64)[changed] - 40) <= 4)  # only at the edge
    assert abs(int(out.sum()) - int(disc(128, (64, 64), 40).sum())) < 0.03 * out.sum()


# ------------------------------------------------------------------------------------------------------------
# Thresholding and multi-class validity
# ------------------------------------------------------------------------------------------------------------


def test_binary_threshold_and_invalid_values() -> None:
    raw = np.array([[0.0, 0.49, 0.5, 0.51, 1.0, 1.2, 1.3, -0.2, -0.3, np.nan]], np.float32)
    np.testing.assert_array_equal(postprocess_mask(raw, ALL_OFF)[0], [0, 0, 1, 1, 1, 1, 0, 0, 0, 0])
    lower = postprocess_mask(raw, replace(ALL_OFF, threshold=0.3))[0]
    np.testing.assert_array_equal(lower, [0, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    kept = postprocess_mask(raw, replace(ALL_OFF, remove_invalid=False))[0]
    np.testing.assert_array_equal(kept, [0, 0, 1, 1, 1, 1, 1, 0, 0, 0])  # 1.3 clipped to foreground; NaN never


def test_multiclass_snapping_gives_only_valid_ids() -> None:
    config = replace(ALL_OFF, num_classes=3)
    raw = np.array([[0.1, 0.24, 0.26, 0.74, 0.76, 1.1, -0.1, 1.2, -0.2, np.inf, np.nan]], np.float32)
    np.testing.assert_array_equal(postprocess_mask(raw, config)[0], [0, 0, 1, 1, 2, 2, 0, 0, 0, 0, 0])
    noisy = np.random.default_rng(0).uniform(-1, 2, (64, 64)).astype(np.float32)
    for nested in (True, False):
        for _, ids in postprocess_steps(noisy, PostprocessConfig(num_classes=3, nested=nested)):
            assert ids.dtype == np.uint8 and set(np.unique(ids)) <= {0, 1, 2}


def test_class_scores_use_argmax_and_drop_non_finite_pixels() -> None:
    scores = np.zeros((3, 2, 2), np.float32)
    scores[:, 0, 0] = [0.1, 0.7, 0.2]
    scores[:, 0, 1] = [0.1, 0.2, 0.7]
    scores[:, 1, 0] = [0.8, 0.1, 0.1]
    scores[:, 1, 1] = [0.1, np.nan, 0.9]
    np.testing.assert_array_equal(postprocess_mask(scores, replace(ALL_OFF, num_classes=3)), [[1, 2], [0, 0]])


def test_nested_classes_are_processed_as_level_sets() -> None:
    """A small cup speck on the disc joins the disc with ``nested``; alone it is background without."""
    ids = np.zeros((40, 40), np.uint8)
    ids[5:35, 5:35] = 1
    ids[10:13, 10:13] = 2  # 9 pixels of class 2
    raw = grey(ids, 3)
    nested = postprocess_mask(raw, only(num_classes=3, min_area=20))
    separate = postprocess_mask(raw, only(num_classes=3, min_area=20, nested=False))
    assert (nested[10:13, 10:13] == 1).all() and (separate[10:13, 10:13] == 0).all()
    assert (nested[5:35, 5:35] == 1).all()


def test_cup_stays_inside_disc_on_corrupted_real_masks(shared_data: Path) -> None:
    rng = np.random.default_rng(0)
    config = PostprocessConfig(num_classes=3, sigma=1.0, opening_radius=2, closing_radius=2, min_area=32)
    masks = real_masks(shared_data / "Drishti-GS_roi", 11, step=10)
    touching = {True: 0, False: 0}
    for mask in masks:
        assert not ((mask == 2) & ndi.binary_dilation(mask == 0)).any()  # real cups never touch background
        raw = corrupt(mask, 3, rng)
        for nested in (True, False):
            steps = postprocess_steps(raw, replace(config, nested=nested))
            final = steps[-1][1]
            touching[nested] += bool(((final == 2) & ndi.binary_dilation(final == 0)).any())
            if nested:
                # The disc is processed exactly as a binary mask would be, whatever the cup does.
                disc_alone = postprocess_mask(grey(steps[0][1] >= 1), replace(config, num_classes=2))
                np.testing.assert_array_equal(final >= 1, disc_alone == 1)
                assert (final == 2).any() and (final == 1).any()
    assert touching[True] == 0
    assert touching[False] > 0  # per-class processing opens gaps between cup and rim: why nesting is the default


# ------------------------------------------------------------------------------------------------------------
# Switches, the fast path against scikit-image, batches
# ------------------------------------------------------------------------------------------------------------

STEP_ON = {
    "blur": {"sigma": 1.5},
    "opening": {"opening_radius": 2},
    "closing": {"closing_radius": 2},
    "min_area": {"min_area": 30},
    "fill_holes": {"fill_holes": True},
}


@pytest.mark.parametrize("step", list(STEP_ON))
def test_each_step_switches_off(step: str, kvasir: Path) -> None:
    raw = corrupt(real_masks(kvasir, 1)[0], 2, np.random.default_rng(1))
    thresholded = postprocess_steps(raw, ALL_OFF)
    assert [name for name, _ in thresholded] == ["threshold"]
    on = postprocess_steps(raw, only(**STEP_ON[step]))
    assert [name for name, _ in on] == ["threshold", step]
    assert not np.array_equal(on[1][1], thresholded[0][1])  # the step does something on this mask
    full = PostprocessConfig(sigma=1.5, opening_radius=2, closing_radius=2, min_area=30, fill_holes=True)
    off = replace(full, **{key: type(value)(0) for key, value in STEP_ON[step].items()})
    assert [name for name, _ in postprocess_steps(raw, off)] == [name for name in STEP_NAMES if name != step]


@pytest.mark.parametrize(
    "config",
    [
        PostprocessConfig(sigma=1.5, opening_radius=3, closing_radius=3, min_area=64),
        PostprocessConfig(sigma=0.7, opening_radius=1, closing_radius=5, min_area=10, threshold=0.4),
        PostprocessConfig(num_classes=3, sigma=1.0, opening_radius=2, closing_radius=2, min_area=32),
        PostprocessConfig(num_classes=3, sigma=2.0, opening_radius=4, closing_radius=1, min_area=100, nested=False),
    ],
)
def test_fast_path_equals_scikit_image(config: PostprocessConfig, shared_data: Path) -> None:
    folder = shared_data / ("Kvasir-SEG" if config.num_classes == 2 else "Drishti-GS_roi")
    rng = np.random.default_rng(config.opening_radius)
    for mask in real_masks(folder, 3, step=7):
        raw = corrupt(mask, config.num_classes, rng)
        fast = postprocess_steps(raw, config)
        reference = postprocess_steps(raw, config, implementation="scikit-image")
        for (name, ids), (_, expected) in zip(fast, reference, strict=True):
            np.testing.assert_array_equal(ids, expected, err_msg=name)


def test_fast_morphology_matches_the_libraries_at_image_borders() -> None:
    """Shapes cut by the image edge: the border rules (erosion keeps edge pixels, dilation adds none) must hold."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = ndi.gaussian_filter(rng.random((30, 41)), 2.0) > 0.5
        for radius in (1, 3, 6):
            footprint = skm.disk(radius)
            np.testing.assert_array_equal(morphology.erode(mask, radius), skm.erosion(mask, footprint, mode="ignore"))
            np.testing.assert_array_equal(morphology.dilate(mask, radius), skm.dilation(mask, footprint, mode="ignore"))


def test_batches_equal_single_masks(kvasir: Path) -> None:
    rng = np.random.default_rng(2)
    raws = np.stack([corrupt(mask[:140, :140], 2, rng) for mask in real_masks(kvasir, 3)]).clip(0, 1)
    config = PostprocessConfig()
    batch = postprocess_masks(raws, config)
    assert batch.shape == raws.shape and batch.dtype == np.uint8
    for raw, ids in zip(raws, batch):
        np.testing.assert_array_equal(ids, postprocess_mask(raw, config))
    scores = np.stack([1.0 - raws, raws], axis=1)  # [N, 2, H, W]: argmax = (value > 0.5), in range [0, 1]
    np.testing.assert_array_equal(postprocess_masks(scores, config), batch)
    assert postprocess_masks(np.zeros((0, 8, 8), np.float32), config).shape == (0, 8, 8)


# ------------------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------------------


def test_mask_statistics_known_answers() -> None:
    masks = np.zeros((4, 64, 64), np.uint8)
    masks[1][disc(64, (32, 32), 20)] = 1
    masks[2][5:15, 5:15] = 1
    masks[2][40:50, 40:50] = 2
    masks[2][30:33, 30:33] = 2  # class 2 in two pieces
    masks[3][disc(64, (32, 32), 20)] = 1
    masks[3][2:62:4, 2:62] = 1  # stripes: a ragged, many-piece class 1
    stats = mask_statistics(masks, 3)
    assert stats["num_masks"] == 4 and stats["empty_fraction"] == 0.25
    one, two = stats["classes"][1], stats["classes"][2]
    assert one["present_fraction"] == 0.75 and one["multi_component_fraction"] == 0.25
    assert two["present_fraction"] == 0.25 and two["multi_component_fraction"] == 0.25
    disc_ratio = mask_statistics(masks[1:2], 2)["classes"][1]["roughness_mean"]
    assert 1.0 <= disc_ratio < 1.2 and one["roughness_mean"] > 1.5
    assert mask_statistics(np.zeros((2, 8, 8), np.uint8), 2)["classes"][1]["roughness_mean"] is None


def test_raw_invalid_fraction() -> None:
    raw = np.array([0.0, 0.2, 0.3, 0.5, 0.74, 0.8, 1.0, 1.2, 1.3, -0.3, np.nan, np.inf], np.float32)
    # Binary levels 0 and 1: only 0.0, 0.2, 0.8, 1.0 and 1.2 lie within 0.25 of one.
    assert raw_invalid_fraction(raw, 2) == pytest.approx(7 / 12)
    assert raw_invalid_fraction(raw, 2, tolerance=0.0) == pytest.approx(10 / 12)
    # Levels 0, 0.5, 1 (tolerance 0.125 in grey): only 0.0, 0.5 and 1.0.
    assert raw_invalid_fraction(raw, 3) == pytest.approx(9 / 12)


# ------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"opening_radius": -1}, "opening_radius"),
        ({"closing_radius": -2}, "closing_radius"),
        ({"opening_radius": 1.5}, "opening_radius"),
        ({"min_area": -5}, "min_area"),
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"tolerance": -0.1}, "tolerance"),
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 300}, "num_classes"),
        ({"fill_holes": "yes"}, "fill_holes"),
    ],
)
def test_bad_parameters_name_the_parameter(changes: dict, name: str) -> None:
    raw = np.zeros((8, 8), np.float32)
    with pytest.raises(InputError) as error:
        postprocess_mask(raw, replace(PostprocessConfig(), **changes))
    assert error.value.where == name
    with pytest.raises(InputError):
        PostprocessConfig.from_dict({**PostprocessConfig().to_dict(), **changes})


def test_bad_arrays_and_config_keys() -> None:
    config = PostprocessConfig()
    for bad, where in [
        (np.zeros((8, 8), np.uint8), "raw"),  # ids, not grey levels
        (np.zeros(8, np.float32), "raw"),
        (np.zeros((3, 8, 8), np.float32), "raw"),  # 3 score planes for 2 classes
        (np.zeros((0, 8), np.float32), "raw"),
    ]:
        with pytest.raises(InputError) as error:
            postprocess_mask(bad, config)
        assert error.value.where == where
    with pytest.raises(InputError, match="raws"):
        postprocess_masks(np.zeros((8, 8), np.float32), config)
    with pytest.raises(InputError, match="raws\\[0\\]"):
        postprocess_masks(np.stack([np.zeros((4, 4)), np.zeros((4, 4))]).astype(np.int32), config)
    with pytest.raises(InputError, match="implementation"):
        postprocess_mask(np.zeros((8, 8), np.float32), config, implementation="opencv")
    with pytest.raises(InputError, match="sigmaa"):
        PostprocessConfig.from_dict({"sigmaa": 1.0})
    assert PostprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InputError) as error:
        mask_statistics(np.full((1, 4, 4), 3, np.uint8), 3)
    assert error.value.where == "masks"
    with pytest.raises(InputError) as error:
        raw_invalid_fraction(np.zeros(4, np.float32), 2, tolerance=0.5)
    assert error.value.where == "tolerance"
