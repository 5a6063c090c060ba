"""Training panel: stage 1 / stage 2 as a job of a runner (a subprocess on this computer), followed through its
event stream by a timer on the UI thread: progress bar, live loss plot, preview images. Nothing trains in napari's
process, so the viewer stays responsive (docs/plugin.md gives the measured event-loop delay)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from alignflow.data import read_image
from alignflow.errors import InputError
from alignflow.training.config import read_config_file

from ..runners import RUN_LOCATIONS, make_runner
from .common import PathField, choice_box, report_error, spin_box, start_worker
from .loss_plot import LossPlot

POLL_MS = 500
STAGES = {"Stage 1: learn the source domain": "train", "Stage 2: align to the references": "align"}
DEVICES = ("auto", "cpu", "cuda", "mps")
PREVIEW_LAYER = "AlignFlow training preview"


class TrainingWidget(QWidget):
    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner: Any = None
        self.job: str | None = None
        self.seen = 0  # events already handled
        self.progress_bar: progress | None = None
        self.last_status: Any = None

        self.source = PathField("Source dataset (folder with images/ and masks/)")
        self.out = PathField("Run folder (created; a new one per run)")
        self.stage = choice_box(list(STAGES))
        self.init = PathField("Stage-1 generator (its run folder)")
        self.references = PathField("Reference images (folder; References panel > Save as folder)")
        self.steps = spin_box(1, 1_000_000, 1000)
        self.batch_size = spin_box(1, 512, 8)
        self.device = choice_box(DEVICES)
        self.run_on = choice_box(list(RUN_LOCATIONS))
        self.config_file = PathField("Optional: YAML/JSON file of further options", folder=False)

        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self._start_clicked)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the run in the run folder from its last checkpoint")
        self.resume_button.clicked.connect(lambda: self._start_clicked(resume=True))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.status_label = QLabel("No job yet.")
        self.status_label.setWordWrap(True)
        self.plot = LossPlot()
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)

        self.form = form = QFormLayout()
        form.addRow("Source", self.source)
        form.addRow("Run folder", self.out)
        form.addRow("Stage", self.stage)
        form.addRow("Start from", self.init)
        form.addRow("References", self.references)
        form.addRow("Steps", self.steps)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Device", self.device)
        form.addRow("Run on", self.run_on)
        form.addRow("Options file", self.config_file)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.resume_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Train the generator</b>"))
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(self.plot)
        layout.addStretch(1)
        self._show_stage_fields()
        self.stage.currentIndexChanged.connect(self._show_stage_fields)

    # ------------------------------------------------------------------ configuration
    @property
    def kind(self) -> str:
        return STAGES[self.stage.currentText()]

    def _show_stage_fields(self) -> None:
        for field in (self.init, self.references):
            field.setVisible(self.kind == "align")
            self.form.labelForField(field).setVisible(self.kind == "align")

    def job_config(self) -> dict[str, Any]:
        """The job's config (the same keys as ``alignflow train/align --config``); InputError names a missing field."""
        config = read_config_file(self.config_file.text()) if self.config_file.text() else {}
        config.update(source=str(self.source.path("Source", "a dataset folder with images/ and masks/")),
                      out=str(self.out.path("Run folder", "a folder for the run")),
                      steps=self.steps.value(), batch_size=self.batch_size.value(), device=self.device.currentText())
        if self.kind == "align":
            config.update(init=str(self.init.path("Start from", "the stage-1 generator's run folder")),
                          references=str(self.references.path("References", "a folder of target-domain images")))
        return config

    # ------------------------------------------------------------------ job control
    def _start_clicked(self, resume: bool = False) -> None:
        try:
            self.start(resume=resume)
        except Exception as error:  # noqa: BLE001 - bad input or a runner failure: a notification, not a dead button
            report_error(error)

    def start(self, resume: bool = False) -> str:
        """Start a new run, or with ``resume`` continue the one in the run folder from its last checkpoint."""
        config = self.job_config()
        out = Path(config["out"])
        if not resume and out.exists() and any(out.iterdir()):
            # The engine refuses such a folder too; saying so here spares the user a failed job.
            raise InputError("Run folder", "a new (empty) folder (or Resume to continue the run in it)", f"{out}, which already holds files")
        if resume and not (out / "checkpoints").is_dir():
            raise InputError("Run folder", "a run with checkpoints to resume", f"{out}, which has none")
        self.runner = make_runner(self.run_on.currentText())
        self.job = self.runner.submit(self.kind, config, resume=resume)
        self.last_status = None
        self.seen = 0
        self.plot.clear()
        self._set_running(True)
        self.status_label.setText(f"Started {self.kind} job {self.job} on {self.run_on.currentText()}.")
        self.timer.start()
        return self.job

    def cancel(self) -> Any:
        """Stop the job (it writes a checkpoint first); the runner's wait happens off the UI thread."""
        if self.runner is None or self.job is None:
            return None
        self.cancel_button.setEnabled(False)
        self.status_label.setText("Cancelling (the job saves a checkpoint first)...")
        return start_worker(self.runner.cancel, self.job, on_done=lambda _: None)

    def poll(self) -> None:
        """One timer tick: new events, then the job's state. Reading a file of events takes well under a millisecond."""
        if self.runner is None or self.job is None:
            return
        try:
            events = self.runner.events(self.job, since=self.seen)
            self.seen += len(events)
            plotted = False
            for event in events:
                plotted |= self._handle(event)
            if plotted:
                self.plot.redraw()
            status = self.runner.status(self.job)
        except Exception as error:  # noqa: BLE001 - a vanished job folder or server: say so, stop polling
            self.timer.stop()
            self._set_running(False)
            report_error(error)
            return
        self.last_status = status
        if status.finished:
            self._finish(status)

    def _handle(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if kind in ("start", "progress", "resume") and "total" in event:
            self._advance(int(event.get("step", 0)), int(event["total"]), event.get("stage"))
        if kind == "progress":
            loss = event.get("loss")
            eta = event.get("eta_s")
            self.status_label.setText(f"Stage {event.get('stage')}: step {event.get('step')} / {event.get('total')}"
                                      + (f", loss {loss:.4f}" if isinstance(loss, float) else "")
                                      + (f", about {eta / 60:.0f} min left" if isinstance(eta, (int, float)) else ""))
            return self.plot.add(event)
        if kind == "preview":
            self._show_preview(event["path"])
        elif kind == "warning":
            show_info(f"AlignFlow: {event.get('message')}")
        return False

    def _advance(self, step: int, total: int, stage: Any) -> None:
        if self.progress_bar is None or self.progress_bar.total != total:
            self._close_progress()
            self.progress_bar = progress(total=total, desc=f"AlignFlow stage {stage}")
        self.progress_bar.update(step - self.progress_bar.n)

    def _show_preview(self, path: str) -> None:
        image = read_image(path)
        if PREVIEW_LAYER in self.viewer.layers:
            self.viewer.layers[PREVIEW_LAYER].data = image
        else:
            self.viewer.add_image(image, name=PREVIEW_LAYER, rgb=True)
            self.viewer.reset_view()  # the preview sheet is wider than what was shown before

    def _finish(self, status: Any) -> None:
        self.timer.stop()
        self._set_running(False)
        self._close_progress()
        messages = {"succeeded": f"Finished: the generator is in {status.run_dir}/generator.",
                    "cancelled": f"Cancelled; the last checkpoint is in {status.run_dir}/checkpoints.",
                    "failed": f"Failed: {status.message}"}
        self.status_label.setText(messages.get(status.state, status.state))
        (show_error if status.state == "failed" else show_info)(f"AlignFlow training: {messages.get(status.state)}")

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.resume_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _close_progress(self) -> None:
        if self.progress_bar is not None:
            self.progress_bar.close()
            self.progress_bar = None
