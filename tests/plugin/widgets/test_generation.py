"""Generation panel with a tiny generator trained on real Kvasir pairs: masks from a dataset layer and drawn masks,
image + mask layers, opacity and contours, the grid with the references, the pairs folder the Export panel reads."""

import json

import numpy as np
import pytest

from alignflow.data import read_mask
from napari_alignflow.readers.dataset_folder import dataset_layers
from napari_alignflow.widgets.common import grid_of
from napari_alignflow.widgets.generation import IMAGES_LAYER, MASKS_LAYER, PAIRS_KEY, GenerationWidget
from napari_alignflow.widgets.references import LAYER as REFERENCES_LAYER

from ..conftest import notifications_since, wait_for_worker


@pytest.fixture
def panel(make_napari_viewer, image_generator, monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))  # where the generated pairs are kept
    viewer = make_napari_viewer()
    widget = GenerationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.generator.setText(str(image_generator))
    widget.steps.setValue(3)
    widget.device.setCurrentText("cpu")
    return viewer, widget


def open_dataset(viewer, folder, name):
    for data, kwargs, kind in dataset_layers(folder, name):
        getattr(viewer, f"add_{kind}")(data, **kwargs)


def test_images_for_a_dataset_layers_masks_appear_with_the_masks_on_top(panel, kvasir_small, qtbot):
    viewer, widget = panel
    open_dataset(viewer, kvasir_small, "kvasir")
    assert widget.masks.currentText() == "kvasir masks"  # the panel lists Labels layers as they open
    wait_for_worker(qtbot, widget.generate(), timeout_ms=120_000)
    result = widget.result
    images, masks = viewer.layers[IMAGES_LAYER], viewer.layers[MASKS_LAYER]
    stems = sorted(p.stem for p in (kvasir_small / "masks").iterdir())
    assert result.stems == stems and images.data.shape[0] == len(stems) == masks.data.shape[0]
    assert images.rgb and images.data.dtype == np.uint8 and images.data.std() > 0
    # Each pair keeps its own size (Kvasir's vary): the masks are the dataset's, the images match them
    for stem, mask, image in zip(stems, result.masks, result.images):
        np.testing.assert_array_equal(mask, read_mask(next((kvasir_small / "masks").glob(stem + ".*"))))
        assert image.shape == (*mask.shape, 3)
    assert viewer.layers.index(masks) > viewer.layers.index(images)  # masks drawn on top
    rows = json.loads((result.folder / "manifest.json").read_text())
    assert [row["seed"] for row in rows] == list(range(len(stems))) and rows[0]["generator"] == str(widget.generator.text())
    assert images.metadata[PAIRS_KEY] == str(result.folder)

    widget.opacity.setValue(80)
    widget.contour.setChecked(True)
    assert masks.opacity == pytest.approx(0.8) and masks.contour > 0


def test_a_drawn_mask_gives_one_image_and_the_grid_shows_the_references(panel, image_files, qtbot):
    viewer, widget = panel
    drawn = np.zeros((120, 160), np.uint8)
    drawn[30:90, 40:110] = 1  # a painted rectangle, as with napari's brush
    viewer.add_labels(drawn, name="drawn")
    widget.masks.setCurrentText("drawn")
    widget.seed.setValue(7)
    wait_for_worker(qtbot, widget.generate(), timeout_ms=120_000)
    assert viewer.layers[IMAGES_LAYER].data.shape == (120, 160, 3)
    np.testing.assert_array_equal(viewer.layers[MASKS_LAYER].data, drawn)
    assert json.loads((widget.result.folder / "manifest.json").read_text())[0]["seed"] == 7

    from alignflow.data import read_image

    other = viewer.add_image(read_image(image_files[0]), name="unrelated", rgb=True)
    viewer.add_image(np.stack([read_image(f) for f in image_files[:3]]), name=REFERENCES_LAYER, rgb=True)
    widget.references.reset_choices()
    assert widget.references.currentText() == REFERENCES_LAYER
    widget.grid.setChecked(True)
    grid, layers = grid_of(viewer), viewer.layers
    assert grid.enabled and not other.visible
    shown = [layers.index(name) for name in (IMAGES_LAYER, MASKS_LAYER, REFERENCES_LAYER)]
    cells = [grid.position(i, layers) for i in shown]
    assert cells[0] == cells[1] != cells[2]  # image and mask share a cell, the references are beside them
    widget.grid.setChecked(False)
    assert not grid.enabled and other.visible and layers[-1].name == MASKS_LAYER


def test_empty_masks_are_refused_with_a_message_and_every_generation_joins_the_curation_list(panel, qtbot):
    from napari_alignflow.session import session_for

    viewer, widget = panel
    masks = np.zeros((3, 40, 48), np.uint8)
    masks[1, 10:30, 10:30] = 1  # only the middle mask has foreground
    viewer.add_labels(masks, name="drawn")
    widget.masks.setCurrentText("drawn")
    seen = len(notifications_since(0))
    wait_for_worker(qtbot, widget.generate(), timeout_ms=120_000)
    assert widget.result.stems == ["drawn_1"]
    assert any("2 empty masks skipped" in m and "drawn_0" in m for m in notifications_since(seen))
    wait_for_worker(qtbot, widget.generate(), timeout_ms=120_000)  # a second generation adds, it does not replace
    session = session_for(viewer)
    assert [pair.batch for pair in session.state.pairs] == [1, 2] and len(session.accepted()) == 2
    viewer.add_labels(np.zeros((20, 20), np.uint8), name="empty")
    widget.masks.setCurrentText("empty")
    with pytest.raises(ValueError, match="masks with foreground"):
        widget.generate()


def test_masks_with_unknown_classes_and_a_missing_generator_are_named(panel, qtbot):
    viewer, widget = panel
    viewer.add_labels(np.full((40, 40), 3, np.uint8), name="three classes")
    widget.masks.setCurrentText("three classes")
    seen = len(notifications_since(0))
    wait_for_worker(qtbot, widget.generate(), timeout_ms=120_000)
    assert any("mask 'three_classes'" in m and "class ids 0..1" in m for m in notifications_since(seen))
    assert IMAGES_LAYER not in viewer.layers and widget.generate_button.isEnabled()
    widget.generator.setText("")
    with pytest.raises(ValueError, match="Generator"):
        widget.generate()
