"""Training panel driving real training subprocesses (tiny generator, real Kvasir pairs) through the local runner."""

import json

import pytest

from napari_alignflow.widgets.training import PREVIEW_LAYER, TrainingWidget

from ..conftest import TINY_GENERATOR


@pytest.fixture
def panel(make_napari_viewer, kvasir_small, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))  # the runner's job records
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"generator": TINY_GENERATOR, "checkpoint_every": 1, "preview_every": 2, "log_every": 1}))
    viewer = make_napari_viewer()
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.source.setText(str(kvasir_small))
    widget.config_file.setText(str(options))
    widget.batch_size.setValue(2)
    widget.device.setCurrentText("cpu")
    return viewer, widget


def test_a_short_stage1_run_finishes_with_losses_and_a_preview(panel, tmp_path, qtbot):
    viewer, widget = panel
    widget.out.setText(str(tmp_path / "run"))
    widget.steps.setValue(3)
    widget.start()
    assert not widget.start_button.isEnabled()
    qtbot.waitUntil(lambda: widget.last_status is not None and widget.last_status.finished, timeout=180_000)
    assert widget.last_status.state == "succeeded", widget.last_status.message
    steps, values = widget.plot.points["loss_denoising"]
    assert steps == [1, 2, 3] and all(v > 0 for v in values)
    assert PREVIEW_LAYER in viewer.layers and viewer.layers[PREVIEW_LAYER].data.ndim == 3
    assert "Finished" in widget.status_label.text() and widget.start_button.isEnabled()
    assert (tmp_path / "run" / "generator" / "model.safetensors").is_file()


def test_cancel_stops_a_running_job_and_keeps_a_checkpoint(panel, tmp_path, qtbot):
    viewer, widget = panel
    widget.out.setText(str(tmp_path / "run"))
    widget.steps.setValue(10_000)
    widget.start()
    qtbot.waitUntil(lambda: len(widget.plot.points["loss_denoising"][0]) >= 2, timeout=180_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.last_status is not None and widget.last_status.finished, timeout=60_000)
    assert widget.last_status.state == "cancelled"
    assert (tmp_path / "run" / "checkpoints" / "latest.json").is_file()
    # Resume continues the cancelled run from its checkpoint to the (new) step count
    stopped_at = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())["step"]
    widget.steps.setValue(stopped_at + 2)
    widget.resume_button.click()
    qtbot.waitUntil(lambda: widget.last_status is not None and widget.last_status.finished, timeout=180_000)
    assert widget.last_status.state == "succeeded", widget.last_status.message
    assert (tmp_path / "run" / "generator" / "model.safetensors").is_file()


def test_missing_fields_and_a_used_run_folder_are_refused_by_name(panel, tmp_path):
    viewer, widget = panel
    widget.source.setText("")
    with pytest.raises(ValueError, match="Source"):
        widget.job_config()
    widget.source.setText(str(tmp_path))
    widget.out.setText(str(tmp_path))  # holds options.json
    with pytest.raises(ValueError, match="Run folder"):
        widget.start()
    widget.stage.setCurrentIndex(1)
    assert widget.init.isVisibleTo(widget)
    with pytest.raises(ValueError, match="Start from"):
        widget.job_config()
