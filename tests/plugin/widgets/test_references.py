"""References panel on real images: layers and files added, the 1-reference warning, the advisor's suggestion."""

import numpy as np
import pytest

from alignflow.data import read_image
from napari_alignflow.widgets.references import ReferencesWidget

from ..conftest import wait_for_worker


@pytest.fixture
def panel(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = ReferencesWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def test_layers_and_files_become_references_with_a_warning_for_one(panel, image_files):
    viewer, widget = panel
    layer = viewer.add_image(read_image(image_files[0]), name="scan", rgb=True)
    viewer.layers.selection = {layer}
    assert widget.add_layers() == 1
    assert widget.count_label.text() == "1 reference" and widget.warning_label.isVisibleTo(widget)
    widget.add_files(image_files[1:3])
    assert widget.list.count() == 3 and widget.count_label.text() == "3 references"
    assert not widget.warning_label.isVisibleTo(widget)
    np.testing.assert_array_equal(widget.references[1].image, read_image(image_files[1]))


def test_a_stack_layer_contributes_each_slice_and_saving_writes_pngs(panel, image_files, tmp_path):
    viewer, widget = panel
    stack = np.stack([read_image(f) for f in image_files[:4]])
    viewer.layers.selection = {viewer.add_image(stack, name="stack", rgb=True)}
    assert widget.add_layers() == 4
    files = widget.save_references(tmp_path / "refs")
    assert len(files) == 4
    np.testing.assert_array_equal(read_image(files[2]), stack[2])


def test_suggest_references_selects_the_advisors_picks(panel, image_files, qtbot):
    viewer, widget = panel
    viewer.add_image(np.stack([read_image(f) for f in image_files]), name="target", rgb=True)
    widget.k_spin.setValue(2)
    wait_for_worker(qtbot, widget.suggest(), timeout_ms=120_000)
    assert widget.advice is not None and len(widget.references) == 2
    picked = [pick["index"] for pick in widget.advice.picks]
    np.testing.assert_array_equal(widget.references[0].image, read_image(image_files[picked[0]]))
    assert "Suggested 2 of 6" in widget.summary_label.text() and widget.suggest_button.isEnabled()


def test_show_as_layer_stacks_references_of_different_sizes(panel, image_files, kvasir_small):
    from napari_alignflow.widgets.common import image_slices
    from napari_alignflow.widgets.references import LAYER

    viewer, widget = panel
    files = [image_files[0], sorted((kvasir_small / "images").iterdir())[0]]  # ClinicDB and Kvasir sizes differ
    widget.add_files(files)
    layer = widget.show_as_layer()
    assert layer.name == LAYER and layer.data.shape[0] == 2
    for (name, image), file in zip(image_slices(layer), files):  # the padding is cropped off again
        assert name == file.name
        np.testing.assert_array_equal(image, read_image(file))
    widget.clear()
    with pytest.raises(ValueError, match="References"):
        widget.show_as_layer()
