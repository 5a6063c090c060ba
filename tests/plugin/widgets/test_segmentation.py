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


def test_images_are_ranked_by_uncertainty_and_the_results_are_saved(panel, image_files, tmp_path, qtbot):
    import json

    from alignflow.data import read_mask, scan_dataset
    from alignflow.segmentation.uncertainty import image_score
    from napari_alignflow.widgets.segmentation import SCORES_FILE

    viewer, widget = panel
    stack = np.stack([read_image(f) for f in image_files[:3]])
    viewer.add_image(stack, name="scans", rgb=True, metadata={"names": [f.name for f in image_files[:3]]})
    wait_for_worker(qtbot, widget.run(), timeout_ms=120_000)
    result = widget.result
    scores = [image_score(item.uncertainty["entropy"], item.samples, "entropy", 2) for item in result.images]
    assert all(0.0 <= score <= 1.0 for score in scores)
    expected = [image_files[i].name for i in sorted(range(3), key=lambda i: -scores[i])]
    assert widget.ranked_names() == expected  # most uncertain first, named by file
    widget.ranking.selectRow(2)
    image_axis = viewer.dims.ndim - 3  # the ensemble layer adds a leading sample axis
    assert viewer.dims.current_step[image_axis] == [f.name for f in image_files].index(expected[2])

    wait_for_worker(qtbot, widget.save(tmp_path / "results"))
    saved = json.loads((tmp_path / "results" / SCORES_FILE).read_text())
    assert [row["name"] for row in saved] == expected and saved[0]["uncertainty_score"] == pytest.approx(max(scores))
    stem = saved[0]["stem"]
    assert (tmp_path / "results" / "labels" / f"{stem}.png").is_file()
    assert (tmp_path / "results" / "uncertainty" / f"{stem}_entropy.tif").is_file()
    wait_for_worker(qtbot, widget.save(tmp_path / "as_dataset", as_dataset=True))
    dataset = scan_dataset(tmp_path / "as_dataset")  # images + masks/: ready to correct and train on
    first = next(pair for pair in dataset.pairs if pair.stem == image_files[0].stem)
    np.testing.assert_array_equal(read_mask(first.mask), result.images[0].labels)
    with pytest.raises(ValueError, match="new"):
        widget.save(tmp_path / "results")


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
