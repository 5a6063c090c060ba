"""Synthetic masks panel with a tiny mask generator trained on real Kvasir masks: layers, sliders, debouncing."""

import numpy as np
import pytest

from alignflow.masks.postprocess import postprocess_masks
from alignflow.masks.training import MaskTrainConfig, train_mask_generator
from napari_alignflow.widgets.masks import MASK_LAYER, RAW_LAYER, MasksWidget

from ..conftest import wait_for_worker

TINY = {"resolution": 64, "num_layers": 1, "attention_head_dim": 8, "num_attention_heads": 2, "context_tokens": 2}


@pytest.fixture(scope="module")
def mask_generator(tmp_path_factory, kvasir_small):
    out = tmp_path_factory.mktemp("maskgen") / "run"
    config = MaskTrainConfig(source=str(kvasir_small), out=str(out), steps=30, batch_size=8, lr=1e-3, device="cpu",
                             preview_every=100, generator=dict(TINY))
    return train_mask_generator(config)


@pytest.fixture
def panel(make_napari_viewer, mask_generator, qtbot):
    viewer = make_napari_viewer()
    widget = MasksWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.generator.setText(str(mask_generator))
    widget.count.setValue(4)
    widget.steps.setValue(4)
    widget.device.setCurrentText("cpu")
    wait_for_worker(qtbot, widget.generate())
    return viewer, widget


def test_generated_masks_appear_raw_and_post_processed(panel):
    viewer, widget = panel
    raw, labels = viewer.layers[RAW_LAYER].data, viewer.layers[MASK_LAYER].data
    assert raw.shape == (4, 64, 64) and labels.shape == (4, 64, 64) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, postprocess_masks(raw, widget.postprocess_config()))
    assert widget.num_classes.value() == 2


def test_slider_moves_are_debounced_into_one_run_with_the_last_values(panel, qtbot):
    viewer, widget = panel
    runs = widget.postprocess_runs
    for value in range(20, 90, 5):  # a fast drag: 14 changes
        widget.threshold.slider.setValue(value)
    widget.sigma.slider.setValue(0)
    widget.min_area.slider.setValue(0)
    qtbot.waitUntil(lambda: widget.postprocess_runs > runs, timeout=2000)
    qtbot.wait(100)
    assert widget.postprocess_runs == runs + 1
    high = viewer.layers[MASK_LAYER].data.copy()
    np.testing.assert_array_equal(high, postprocess_masks(widget.raw, widget.postprocess_config()))
    assert widget.postprocess_config().threshold == pytest.approx(0.85)
    widget.threshold.slider.setValue(10)
    qtbot.waitUntil(lambda: widget.postprocess_runs == runs + 2, timeout=2000)
    low = viewer.layers[MASK_LAYER].data
    assert (low > 0).sum() > (high > 0).sum()  # a lower threshold keeps more foreground


def test_the_minimum_area_range_follows_the_mask_size(panel):
    viewer, widget = panel
    assert widget.min_area.slider.maximum() == 64 * 64 // 10  # not a fixed 0-1000 px (a quarter of a 64-px mask)
    widget.min_area.slider.setValue(widget.min_area.slider.maximum())
    assert widget.postprocess_config().min_area == 409


def test_a_missing_generator_folder_is_named(make_napari_viewer, tmp_path):
    widget = MasksWidget(make_napari_viewer())
    with pytest.raises(ValueError, match="Generator"):
        widget.generate()
