"""Segmentation panel with a tiny MedFlowSeg trained on real Kvasir pairs: fused labels, uncertainty with a
colorbar, the ensemble as a stack, on a stack of real CVC-ClinicDB images of their own sizes."""

import numpy as np
import pytest

from alignflow.data import read_image
from alignflow.segmentation.inference import load_segmenter, segment_images
from alignflow.segmentation.uncertainty import maximum_value
from napari_alignflow.readers.dataset_folder import dataset_layers
from napari_alignflow.widgets.segmentation import LABELS_LAYER, SAMPLES_LAYER, UNCERTAINTY_LAYER, SegmentationWidget

from ..conftest import wait_for_worker


@pytest.fixture
def panel(make_napari_viewer, segmenter):
    viewer = make_napari_viewer()
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.segmenter.setText(str(segmenter))
    widget.steps.setValue(3)
    widget.samples.setValue(4)
    widget.seed.setValue(5)
    widget.device.setCurrentText("cpu")
    return viewer, widget


def test_a_stack_is_segmented_with_fused_labels_uncertainty_and_samples(panel, segmenter, clinicdb_small, qtbot):
    viewer, widget = panel
    for data, kwargs, _kind in dataset_layers(clinicdb_small, "clinic")[:1]:  # the images only
        viewer.add_image(data, **kwargs)
    assert widget.image.currentText() == "clinic images"
    wait_for_worker(qtbot, widget.run(), timeout_ms=120_000)
    files = sorted((clinicdb_small / "images").iterdir())
    images = [read_image(f) for f in files]
    expected = segment_images(load_segmenter(segmenter, "cpu"), images, num_samples=4, num_steps=3, seed=5)
    labels, uncertainty, samples = (viewer.layers[name] for name in (LABELS_LAYER, UNCERTAINTY_LAYER, SAMPLES_LAYER))
    assert labels.data.shape[0] == len(files) and samples.data.shape[:2] == (4, len(files))
    for i, (image, item) in enumerate(zip(images, expected.images)):
        height, width = image.shape[:2]
        np.testing.assert_array_equal(labels.data[i, :height, :width], item.labels)
        np.testing.assert_array_equal(samples.data[:, i, :height, :width], item.samples)
        np.testing.assert_allclose(uncertainty.data[i, :height, :width], item.uncertainty["entropy"])
    assert uncertainty.colormap.name == "magma" and uncertainty.colorbar.visible
    assert tuple(uncertainty.contrast_limits) == pytest.approx((0.0, maximum_value("entropy", 2)))

    widget.uncertainty.setCurrentIndex(1)  # variance: the same result, another map
    assert uncertainty.metadata["uncertainty"] == "variance"
    np.testing.assert_allclose(uncertainty.data[0, : images[0].shape[0], : images[0].shape[1]],
                               expected.images[0].uncertainty["variance"])


def test_only_the_image_shown_and_a_missing_segmenter(panel, image_files, qtbot):
    viewer, widget = panel
    stack = np.stack([read_image(f) for f in image_files[:3]])
    viewer.add_image(stack, name="scans", rgb=True)
    viewer.dims.set_current_step(0, 2)
    widget.which.setCurrentIndex(1)
    wait_for_worker(qtbot, widget.run(), timeout_ms=120_000)
    assert widget.names == ["scans [2]"] and viewer.layers[LABELS_LAYER].data.shape == stack.shape[1:3]
    widget.segmenter.setText("")
    with pytest.raises(ValueError, match="Segmenter"):
        widget.run()
