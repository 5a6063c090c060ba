"""Export panel: the accepted pairs of every generation (tiny real generator) plus real Kvasir pairs, written as
nnU-Net v2 and plain folders; an existing destination is refused with a notification unless overwrite is ticked."""

import json

import numpy as np
import pytest

from alignflow.data import read_mask, scan_dataset
from napari_alignflow.session import REJECTED, session_for
from napari_alignflow.widgets.export import FORMATS, ExportWidget
from napari_alignflow.widgets.generation import GenerationWidget

from ..conftest import notifications_since, wait_for_worker


def test_the_panels_formats_are_the_engines():
    from alignflow.export import FORMATS as ENGINE_FORMATS

    assert set(FORMATS.values()) == set(ENGINE_FORMATS)


@pytest.fixture
def generated(make_napari_viewer, image_generator, monkeypatch, tmp_path, qtbot):
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    generation = GenerationWidget(viewer)
    viewer.window.add_dock_widget(generation)
    masks = np.zeros((2, 48, 64), np.uint8)
    masks[0, 10:30, 10:40] = 1
    masks[1, 20:40, 30:60] = 1
    viewer.add_labels(masks, name="drawn")
    generation.generator.setText(str(image_generator))
    generation.steps.setValue(2)
    generation.device.setCurrentText("cpu")
    wait_for_worker(qtbot, generation.generate(), timeout_ms=120_000)
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget, masks, generation


def test_generated_and_real_pairs_are_exported_for_nnunet(generated, kvasir_small, tmp_path, qtbot):
    viewer, widget, masks, _ = generated
    assert widget.generated_count.text().startswith("2 accepted of 2")
    widget.use_real.setChecked(True)
    widget.real.setText(str(kvasir_small))
    out = tmp_path / "Dataset501_Polyps"
    widget.out.setText(str(out))
    widget.label_names.setText("background, polyp")
    seen = len(notifications_since(0))
    wait_for_worker(qtbot, widget.export())
    real_count = len(scan_dataset(kvasir_small).pairs)
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["numTraining"] == real_count + 2 and dataset["labels"] == {"background": 0, "polyp": 1}
    assert json.loads((out / "manifest.json").read_text())["counts"] == {"real": real_count, "synthetic": 2, "target": 0,
                                                                         "cases": real_count + 2}
    np.testing.assert_array_equal(read_mask(out / "labelsTr" / "synthetic_drawn_0.png"), masks[0])
    assert any(str(out) in m and f"{real_count + 2} pairs" in m for m in notifications_since(seen))

    # the same destination again: refused with the reason, nothing replaced; with overwrite it is replaced
    widget.use_real.setChecked(False)
    seen = len(notifications_since(0))
    wait_for_worker(qtbot, widget.export())
    assert any("does not exist yet" in m and "overwrite" in m for m in notifications_since(seen))
    assert "Not exported" in widget.status_label.text()
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == real_count + 2
    widget.overwrite.setChecked(True)
    wait_for_worker(qtbot, widget.export())
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2


def test_labelled_target_pairs_and_a_share_by_copies(generated, kvasir_small, clinicdb, make_pairs, tmp_path, qtbot):
    """The 8 real pairs, the 2 accepted generated pairs and 2 labelled CVC-ClinicDB pairs at a 0.25 share: generated and
    target pairs each an equal part of a quarter of the cases (real x3, the others x2), with nnU-Net folds."""
    viewer, widget, _, _ = generated
    make_pairs(clinicdb, tmp_path / "labelled_references", 2)
    widget.use_real.setChecked(True)
    widget.real.setText(str(kvasir_small))
    widget.use_target.setChecked(True)
    with pytest.raises(ValueError, match="Target pairs"):
        widget.export()  # ticked without a folder
    widget.target.setText(str(tmp_path / "labelled_references"))
    assert not widget.share.isEnabled()
    widget.use_share.setChecked(True)
    assert widget.share.isEnabled() and widget.share.value() == 0.25
    out = tmp_path / "Dataset505_Shares"
    widget.out.setText(str(out))
    wait_for_worker(qtbot, widget.export())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"real": 8, "synthetic": 2, "target": 2, "cases": 32}
    assert manifest["sampling"]["copies"] == {"real": 3, "synthetic": 2, "target": 2} and manifest["sampling"]["reached"] == 0.25
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 32
    assert len(json.loads((out / "splits_final.json").read_text())) == 5
    assert "as 32 cases" in widget.status_label.text() and "25%" in widget.status_label.text()


def test_every_accepted_generation_is_exported_not_only_the_last(generated, tmp_path, qtbot):
    viewer, widget, masks, generation = generated
    wait_for_worker(qtbot, generation.generate(), timeout_ms=120_000)  # the same two masks again: a second batch
    session = session_for(viewer)
    session.decide([session.state.pairs[0]], REJECTED)
    widget.format.setCurrentIndex(list(FORMATS.values()).index("folders"))
    widget.out.setText(str(tmp_path / "plain"))
    wait_for_worker(qtbot, widget.export())
    exported = sorted(pair.stem for pair in scan_dataset(tmp_path / "plain").pairs)
    assert len(exported) == 3  # 2 + 2 generated, one rejected
    # drawn_1 was generated twice and accepted twice: told apart by generation; drawn_0 is left only once
    assert [stem for stem in exported if "drawn_1" in stem] == ["synthetic_g1_drawn_1", "synthetic_g2_drawn_1"]
    assert "synthetic_drawn_0" in exported
    widget.use_generated.setChecked(False)
    with pytest.raises(ValueError, match="Export"):
        widget.export()
    widget.use_generated.setChecked(True)
    session.decide(session.state.pairs, REJECTED)
    with pytest.raises(ValueError, match="Generated pairs"):
        widget.export()
