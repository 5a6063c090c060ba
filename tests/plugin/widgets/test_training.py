"""Training panel driving real training subprocesses (tiny generator, real Kvasir pairs) through the local runner."""

import json

import numpy as np
import pytest

from napari_alignflow.widgets.loss_plot import LossPlot
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
    assert widget.last_preview is not None and not widget.preview.pixmap().isNull()  # shown in the tab
    assert PREVIEW_LAYER not in viewer.layers  # the viewer gets it only when asked
    widget.preview_button.click()
    np.testing.assert_array_equal(viewer.layers[PREVIEW_LAYER].data, widget.last_preview)
    assert "Finished" in widget.status_label.text() and widget.start_button.isEnabled()
    assert (tmp_path / "run" / "generator" / "model.safetensors").is_file()
    assert widget.plot.draws >= 1 and widget.plot.curves["loss_denoising"].opts["symbol"] is not None  # markers
    # The run's own data-preparation event, as the panel words it: the count, a time estimate, "done once"
    encode = next(e for e in map(json.loads, (tmp_path / "run" / "events.jsonl").read_text().splitlines())
                  if e.get("stage") == "encode")
    widget._handle(encode)
    assert f"Preparing data: encoding {encode['total']} images" in widget.status_label.text()
    assert "left" in widget.status_label.text() and "done once" in widget.status_label.text()
    left = widget.progress.format().split(", ", 1)[1]  # one time-left figure: the bar's is the status line's
    assert "left" in left and left in widget.status_label.text()


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


def test_the_loss_plot_shows_a_curve_of_one_point(qtbot):
    """A marker per point: a line with one point and no marker draws nothing (stage 2's empty-looking plot)."""
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(320, 200)
    plot.show()
    qtbot.waitExposed(plot)
    empty = plot.view.grab().toImage()
    plot.add({"type": "progress", "step": 5, "loss_align": 0.3})
    plot.redraw()
    qtbot.wait(50)
    assert plot.curves["loss_align"].getData()[0].tolist() == [5] and plot.view.grab().toImage() != empty


def test_stage2_fields_and_intervals_that_follow_the_step_count(panel, tmp_path):
    viewer, widget = panel
    widget.config_file.setText("")
    widget.out.setText(str(tmp_path / "run"))
    widget.steps.setValue(1000)
    widget.max_pairs.setValue(64)
    config = widget.job_config()
    assert (config["log_every"], config["preview_every"], config["max_pairs"]) == (10, 100, 64)
    widget.steps.setValue(30)  # a short run still gets a readable curve: a point per step
    assert widget.job_config()["log_every"] == 1
    widget.set_stage("align")
    assert widget.t_is.isVisibleTo(widget) and widget.translation.isVisibleTo(widget)
    widget.init.setText(str(tmp_path / "stage1"))
    widget.references.setText(str(tmp_path / "refs"))
    widget.num_references.setValue(6)
    widget.t_is.setValue(8)
    widget.w_align.setValue(0.5)
    widget.reward.setCurrentIndex(1)
    config = widget.job_config()
    assert (config["num_references"], config["t_is"], config["w_align"], config["reward"]) == (6, 8, 0.5, "skl")
    assert "translation_strength" not in config  # 0 = off: the engine's default
    widget.translation.setValue(0.6)
    assert widget.job_config()["translation_strength"] == pytest.approx(0.6)
    from alignflow.generator.config import TrainConfig

    TrainConfig.from_dict({**widget.job_config(), "stage": 2}).validate()  # the engine takes every key the panel sets


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
