"""Training panel, "run on: remote server": a real job server (the app `alignflow serve` runs, on loopback) trains a
tiny generator on real Kvasir pairs uploaded by the panel; loss, progress and previews come from the server, the run
folder is downloaded at the end. A wrong token and a server that is down are notifications with the reason."""

import json
import socket
import threading
import time

import pytest
import uvicorn
from qtpy.QtWidgets import QLineEdit

from alignflow.server.app import ServerSettings, create_app
from napari_alignflow import runners
from napari_alignflow.widgets.training import PREVIEW_LAYER, TrainingWidget

from ..conftest import TINY_GENERATOR, notifications_since, wait_for_worker

TOKEN = "plugin-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server_url(tmp_path):
    app = create_app(ServerSettings(data_root=tmp_path / "server", token=TOKEN, poll_s=0.2))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=30)
    scheduler = app.state.scheduler
    for record in scheduler.store.active():
        scheduler.cancel(record.job_id)  # nothing the test started outlives it


@pytest.fixture
def panel(make_napari_viewer, kvasir_small, tmp_path):
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"generator": TINY_GENERATOR, "checkpoint_every": 1, "preview_every": 2, "log_every": 1}))
    viewer = make_napari_viewer()
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.run_on.setCurrentText(runners.REMOTE)
    widget.source.setText(str(kvasir_small))
    widget.out.setText(str(tmp_path / "downloaded"))
    widget.config_file.setText(str(options))
    widget.batch_size.setValue(2)
    widget.device.setCurrentText("cpu")
    return viewer, widget


def test_a_remote_stage1_run_streams_losses_and_previews_then_downloads(panel, server_url, tmp_path, qtbot):
    viewer, widget = panel
    assert widget.server_url.isVisibleTo(widget) and widget.server_token.echoMode() == QLineEdit.EchoMode.Password
    widget.server_url.setText(server_url)
    widget.server_token.setText(TOKEN)
    widget.steps.setValue(3)
    seen = len(notifications_since(0))
    wait_for_worker(qtbot, widget.start(), timeout_ms=60_000)
    assert widget.job is not None and not widget.start_button.isEnabled()
    qtbot.waitUntil(widget.start_button.isEnabled, timeout=180_000)  # ended, and the download is done
    assert widget.last_status.state == "succeeded", widget.status_label.text()
    steps, values = widget.plot.points["loss_denoising"]
    assert steps == [1, 2, 3] and all(v > 0 for v in values)
    assert widget.last_preview is not None and widget.last_preview.ndim == 3  # fetched from the server
    assert widget.show_preview_layer().name == PREVIEW_LAYER
    assert widget.results == tmp_path / "downloaded"
    assert (tmp_path / "downloaded" / "generator" / "model.safetensors").is_file()
    assert widget.init.text() == f"job:{widget.job}/generator"  # stage 2 on the server starts from it
    shown = notifications_since(seen) + [widget.status_label.text()]
    assert not any(TOKEN in text for text in shown)


def test_a_wrong_token_is_a_notification_with_the_reason(panel, server_url, qtbot):
    viewer, widget = panel
    widget.server_url.setText(server_url)
    widget.server_token.setText("not-the-token-of-this-server")
    seen = len(notifications_since(0))
    wait_for_worker(qtbot, widget.start(), timeout_ms=60_000)
    assert any("token" in m and "HTTP 401" in m for m in notifications_since(seen))
    assert widget.job is None and "Not started" in widget.status_label.text() and widget.start_button.isEnabled()
    assert not any("not-the-token" in m for m in notifications_since(seen))


def test_a_server_that_is_down_is_a_notification_with_the_reason(panel, monkeypatch, qtbot):
    viewer, widget = panel
    monkeypatch.setattr(runners, "REMOTE_RETRIES", 1)  # the default backs off for 15 s before giving up
    url = f"http://127.0.0.1:{free_port()}"
    widget.server_url.setText(url)
    widget.server_token.setText(TOKEN)
    seen = len(notifications_since(0))
    wait_for_worker(qtbot, widget.start(), timeout_ms=60_000)
    assert any(url in m and "no answer after 2 tries" in m for m in notifications_since(seen))
    assert widget.start_button.isEnabled()
