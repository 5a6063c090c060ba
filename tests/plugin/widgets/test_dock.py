"""The AlignFlow dock: every panel as a tab that fits a 1366 x 768 laptop screen, and the guided flow driven end to end
as a user would (tiny real generator trained and aligned in real subprocesses, real Kvasir-SEG source and
CVC-ClinicDB target scans): source, target, references, train and align, preview, curate, export."""

import json

import pytest

from alignflow.data import scan_dataset
from napari_alignflow.readers.dataset_folder import dataset_layers
from napari_alignflow.session import REJECTED, session_for
from napari_alignflow.widgets.dock import PANELS, AlignFlowDock
from napari_alignflow.widgets.export import FORMATS
from napari_alignflow.widgets.guide import DONE, NEXT

from ..conftest import TINY_GENERATOR, wait_for_worker

SCREEN = (1366, 768)


@pytest.fixture
def dock(make_napari_viewer, monkeypatch, tmp_path, qtbot):
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*SCREEN)
    widget = AlignFlowDock(viewer)
    viewer.window.add_dock_widget(widget, name="AlignFlow")
    qtbot.waitExposed(viewer.window._qt_window)
    return viewer, widget


def test_every_tab_fits_a_laptop_screen(dock, qtbot):
    viewer, widget = dock
    assert [widget.tabs.tabText(i) for i in range(widget.tabs.count())] == ["Guide", *PANELS]
    window = viewer.window._qt_window
    assert window.height() <= SCREEN[1] and window.width() <= SCREEN[0]  # the dock did not force the window larger
    for index in range(widget.tabs.count()):
        widget.tabs.setCurrentIndex(index)
        qtbot.wait(10)
        assert widget.minimumSizeHint().height() < SCREEN[1] // 2, widget.tabs.tabText(index)
    assert widget.guide.steps["source"].button.isEnabled() and not widget.guide.steps["train"].button.isEnabled()


@pytest.mark.slow
def test_the_guided_flow_from_source_to_export(dock, kvasir_small, clinicdb_small, tmp_path, qtbot):
    viewer, widget = dock
    guide, panels, session = widget.guide, widget.panels, session_for(viewer)
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"generator": TINY_GENERATOR, "checkpoint_every": 1000, "align_batch_size": 2}))
    training = panels["Train"]
    training.config_file.setText(str(options))
    training.batch_size.setValue(2)
    training.device.setCurrentText("cpu")
    panels["Generate"].steps.setValue(2)
    panels["Generate"].device.setCurrentText("cpu")

    guide.work.setText(str(tmp_path / "job"))
    guide.source.setText(str(kvasir_small))
    guide.steps["source"].button.click()
    assert session.state.source == kvasir_small and guide.steps["source"].mark.text() == DONE
    assert guide.steps["target"].mark.text() == NEXT and not guide.steps["references"].button.isEnabled()

    for data, kwargs, _ in dataset_layers(clinicdb_small, "ClinicDB")[:1]:  # target scans: images, no masks
        viewer.add_image(data, **kwargs)
    guide.target.setCurrentText("ClinicDB images")
    guide.steps["target"].button.click()
    guide.k.setValue(3)
    wait_for_worker(qtbot, guide.suggest_references(), timeout_ms=180_000)
    assert len(list(session.state.references.iterdir())) == 3

    guide.steps1.setValue(2)
    guide.steps2.setValue(2)
    guide.steps["train"].button.click()
    qtbot.waitUntil(lambda: session.state.stage2 is not None or (training.start_button.isEnabled()
                                                                    and training.follow is None
                                                                    and session.state.stage1 is None
                                                                    and training.last_status is not None),
                    timeout=600_000)
    assert session.state.stage2 == tmp_path / "job" / "stage2", training.status_label.text()
    assert json.loads((tmp_path / "job" / "stage2" / "config.json").read_text())["stage"] == 2

    guide.preview.setValue(2)
    wait_for_worker(qtbot, guide.generate_previews(), timeout_ms=180_000)
    assert len(session.state.pairs) == 2 and widget.tabs.tabText(widget.tabs.currentIndex()) == "Generate"
    session.decide(session.state.pairs[:1], REJECTED)
    assert guide.steps["export"].button.isEnabled()

    export = panels["Export"]
    assert export.real.text() == str(kvasir_small) and export.use_real.isChecked()  # the source, from step 1
    export.format.setCurrentIndex(list(FORMATS.values()).index("folders"))
    export.out.setText(str(tmp_path / "augmented"))
    wait_for_worker(qtbot, export.export())
    exported = scan_dataset(tmp_path / "augmented")
    assert len(exported.pairs) == len(scan_dataset(kvasir_small).pairs) + 1  # the real pairs and the accepted one
    assert guide.steps["export"].mark.text() == DONE
