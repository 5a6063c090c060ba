"""Training panel: stage 1 / stage 2 as a job of a runner (a subprocess on this computer, or a job of an
``alignflow serve`` server), followed through its event stream: data preparation with its own progress and time
estimate, a progress bar, a live loss plot, preview images.

Nothing trains in napari's process, so the viewer stays responsive (docs/plugin.md gives the measured event-loop
delay). A timer on the UI thread asks once a second for the job's state and new events; the asking (a file read, or
HTTP requests with retries for a server) runs in a worker thread, one at a time, so a slow or unreachable server never
blocks the viewer.

``start_chain`` runs stage 1 and then stage 2 from it (the guided flow's "Train and align").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import napari
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor, QImage, QPainter, QPixmap
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from alignflow.config import read_config_file
from alignflow.errors import InputError

from ..runners import REMOTE, RUN_LOCATIONS, Poll, make_runner
from ..runners import poll as poll_job
from ..runners import submit as submit_job
from ..session import session_for
from .common import DEVICES, PathField, choice_box, form, guarded, set_row_visible, spin_box, start_worker
from .loss_plot import LossPlot

POLL_MS = 1000  # once a second: each update repaints the window (napari composites it through OpenGL)
STAGES = {"Stage 1: learn the source domain": "train", "Stage 2: align to the references": "align"}
REWARDS = {"MMD (the paper)": "mmd", "symmetric KL": "skl"}
PREVIEW_LAYER = "AlignFlow training preview"
PLOT_EVERY_S = 3.0
LOG_POINTS = 100  # about this many loss points per run, whatever its length
PREVIEWS = 10  # and this many previews


def interval(steps: int, count: int) -> int:
    """Every how many steps, for about ``count`` events over a run of ``steps`` (at least every step)."""
    return max(1, steps // count)


def time_left(seconds: float) -> str:
    """One wording for every remaining-time figure of the panel (status line and progress bar)."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s left"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min left"
    return f"about {seconds / 3600:.1f} h left"


def rgb_pixmap(image: Any, width: int) -> QPixmap:
    """A uint8 RGB array as a pixmap ``width`` pixels wide (kept in proportion)."""
    import numpy as np

    data = np.ascontiguousarray(image[..., :3])
    height, columns = data.shape[:2]
    picture = QImage(data.data, columns, height, 3 * columns, QImage.Format.Format_RGB888).copy()  # numpy owns data
    return QPixmap.fromImage(picture).scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)


class StepBar(QWidget):
    """A progress bar that repaints with the rest of the window. QProgressBar.setValue repaints synchronously, and in
    napari's window (composited through OpenGL) each such repaint cost 24 ms of the UI thread on a loaded machine;
    here ``set`` only schedules a paint, which Qt merges with the status line's and the plot's."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.done, self.total, self.text = 0, 1, ""
        self.setMinimumHeight(self.fontMetrics().height() + 8)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set(self, done: int, total: int, text: str) -> None:
        self.done, self.total, self.text = done, max(total, 1), text
        self.update()

    def format(self) -> str:
        return self.text

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        colours = theme_colours()
        painter = QPainter(self)
        frame = self.rect().adjusted(0, 0, -1, -1)
        painter.fillRect(frame, QColor(colours["foreground"]))
        filled = frame.adjusted(0, 0, -round(frame.width() * (1 - min(self.done / self.total, 1.0))), 0)
        painter.fillRect(filled, QColor(colours["current"]))
        painter.setPen(QColor(colours["text"]))
        painter.drawText(frame, Qt.AlignmentFlag.AlignCenter, self.text)
        painter.end()


def theme_colours() -> dict[str, str]:
    """napari's current theme's colours (the bar looks like napari's own), with the dark theme's as a fallback."""
    fallback = {"foreground": "#2e333e", "current": "#4560c4", "text": "#f0f1f2"}
    try:
        from napari.settings import get_settings
        from napari.utils.theme import get_theme

        theme = get_theme(get_settings().appearance.theme)
        return {key: str(getattr(theme, key).as_hex()) for key in fallback}
    except (KeyError, ValueError, AttributeError):
        return fallback


@dataclass
class Follow:
    """Stage 2 to start when the running stage 1 succeeds (the chained "Train and align")."""

    out: Path
    references: Path
    steps: int


class TrainingWidget(QWidget):
    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.runner: Any = None
        self.job: str | None = None
        self.seen = 0  # events already handled
        # The run's progress in the tab, not in napari's activity area: napari animates its activity indicator for as
        # long as a progress bar is open, and every frame repainted the whole window (about 25 per second, each one
        # 17 ms of the UI thread on a loaded machine: benchmarks/plugin_event_loop.py) for the hours a run takes.
        self.progress = StepBar()
        self.progress.setVisible(False)
        self.last_status: Any = None
        self.results: Path | None = None  # the finished run folder on this computer (a server's is downloaded)
        self.polling: Any = None  # the worker asking for the job's news, while one is under way
        self.out_folder: Path | None = None
        self.started_at = 0.0
        self.events_seen = False
        self.follow: Follow | None = None
        self.plotted_at = 0.0
        self.plot_stale = False

        self.source = PathField("Source dataset (folder with images/ and masks/)")
        self.out = PathField("Run folder (created; a new one per run)")
        self.stage = choice_box(list(STAGES))
        self.init = PathField("Stage-1 generator (its run folder)")
        self.references = PathField("Reference images (folder; References tab > Save as folder)")
        self.num_references = spin_box(0, 10_000, 10)
        self.num_references.setSpecialValueText("all")
        self.t_is = spin_box(0, 19, 5)
        self.w_align = QDoubleSpinBox()
        self.w_align.setRange(0.0, 100.0)
        self.w_align.setSingleStep(0.1)
        self.w_align.setValue(1.0)
        self.reward = choice_box(REWARDS)
        self.translation = QDoubleSpinBox()
        self.translation.setRange(0.0, 1.0)
        self.translation.setSingleStep(0.05)
        self.translation.setSpecialValueText("off")
        self.steps = spin_box(1, 1_000_000, 1000)
        self.batch_size = spin_box(1, 512, 8)
        self.max_pairs = spin_box(0, 1_000_000, 0)
        self.max_pairs.setSpecialValueText("all")
        self.device = choice_box(DEVICES)
        self.run_on = choice_box(list(RUN_LOCATIONS))
        self.server_url = QLineEdit()
        self.server_url.setPlaceholderText("https://gpu.lab.example:8765 (alignflow serve)")
        self.server_token = QLineEdit()
        self.server_token.setEchoMode(QLineEdit.EchoMode.Password)  # shown as dots, kept only here and in the runner
        self.server_token.setPlaceholderText("the server's token")
        self.config_file = PathField("Optional: YAML/JSON file of further options", folder=False)

        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(lambda: guarded(self.start))
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue from the last checkpoint: on this computer the run in the run folder, "
                                      "on a server this panel's last job")
        self.resume_button.clicked.connect(lambda: guarded(lambda: self.start(resume=True)))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.status_label = QLabel("No job yet.")
        self.status_label.setWordWrap(True)
        self.plot = LossPlot()
        self.last_preview: Any = None
        self.preview = QLabel()
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.preview_button = QPushButton("Show preview in viewer")
        self.preview_button.setToolTip(f"The newest preview (generated images over their masks) as the layer "
                                       f"'{PREVIEW_LAYER}', updated with every new preview")
        self.preview_button.setEnabled(False)
        self.preview_button.clicked.connect(lambda: guarded(self.show_preview_layer))
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)

        self.form = form("training", [
            ("source", "Source", self.source), ("out", "Run folder", self.out), ("stage", "Stage", self.stage),
            ("init", "Start from", self.init), ("references", "References", self.references),
            ("num_references", "References used", self.num_references), ("t_is", "t_is", self.t_is),
            ("w_align", "w_align", self.w_align), ("reward", "Reward", self.reward),
            ("translation", "Translation", self.translation),
            ("steps", "Steps", self.steps), ("batch_size", "Batch size", self.batch_size),
            ("max_pairs", "Max pairs", self.max_pairs), ("device", "Device", self.device),
            ("run_on", "Run on", self.run_on), ("server", "Server", self.server_url), ("token", "Token", self.server_token),
            ("options", "Options file", self.config_file),
        ])
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.resume_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Train the generator</b>"))
        layout.addLayout(self.form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.plot)
        layout.addWidget(self.preview)
        layout.addWidget(self.preview_button)
        layout.addStretch(1)
        self._show_fields()
        self.stage.currentIndexChanged.connect(self._show_fields)
        self.run_on.currentIndexChanged.connect(self._show_fields)

    # ------------------------------------------------------------------ configuration
    @property
    def kind(self) -> str:
        return STAGES[self.stage.currentText()]

    @property
    def remote(self) -> bool:
        return self.run_on.currentText() == REMOTE

    def set_stage(self, kind: str) -> None:
        self.stage.setCurrentIndex(list(STAGES.values()).index(kind))

    def _show_fields(self) -> None:
        align = self.kind == "align"
        for field, shown in ((self.init, align), (self.references, align), (self.num_references, align),
                             (self.t_is, align), (self.w_align, align), (self.reward, align), (self.translation, align),
                             (self.server_url, self.remote), (self.server_token, self.remote)):
            set_row_visible(self.form, field, shown)
        self.init.edit.setPlaceholderText("job:ID/generator (a stage-1 job on the server)" if self.remote
                                          else "Stage-1 generator (its run folder)")

    def job_config(self) -> dict[str, Any]:
        """The job's config (the same keys as ``alignflow train/align --config``); InputError names a missing field.

        Log and preview intervals follow the number of steps (about 100 loss points and 10 previews per run) unless
        the options file sets them."""
        config = read_config_file(self.config_file.text()) if self.config_file.text() else {}
        steps = self.steps.value()
        config.setdefault("log_every", interval(steps, LOG_POINTS))
        config.setdefault("preview_every", interval(steps, PREVIEWS))
        config.update(source=str(self.source.path("Source", "a dataset folder with images/ and masks/")),
                      out=str(self.out.path("Run folder", "a folder for the run")),
                      steps=steps, batch_size=self.batch_size.value(), device=self.device.currentText())
        if self.max_pairs.value():
            config["max_pairs"] = self.max_pairs.value()
        if self.kind == "align":
            config.update(init=str(self.init.path("Start from", "the stage-1 generator's run folder")),
                          references=str(self.references.path("References", "a folder of target-domain images")),
                          t_is=self.t_is.value(), w_align=self.w_align.value(), reward=REWARDS[self.reward.currentText()])
            if self.num_references.value():
                config["num_references"] = self.num_references.value()
            if self.translation.value() > 0:
                config["translation_strength"] = self.translation.value()
        return config

    # ------------------------------------------------------------------ job control
    def start(self, resume: bool = False) -> Any:
        """Start a new run, or with ``resume`` continue the last one from its last checkpoint (this computer: the run
        in the run folder; a server: this panel's last job). Submitting (for a server: uploading the data) happens
        in a worker; returns it."""
        config = self.job_config()
        out = Path(config["out"])
        if (not resume or self.remote) and out.exists() and any(out.iterdir()):
            # The engine refuses such a folder too (a server's results are downloaded into it); saying so here spares
            # the user a failed job.
            resume_hint = "" if self.remote else " (or Resume to continue the run in it)"
            raise InputError("Run folder", f"a new (empty) folder{resume_hint}", f"{out}, which already holds files")
        if resume and not self.remote and not (out / "checkpoints").is_dir():
            raise InputError("Run folder", "a run with checkpoints to resume", f"{out}, which has none")
        previous = self.job if resume and self.remote and self.remote_job else None
        runner = self.runner if previous is not None else make_runner(
            self.run_on.currentText(), url=self.server_url.text(), token=self.server_token.text())
        self.last_status = self.results = None
        self.start_button.setEnabled(False)
        self.resume_button.setEnabled(False)
        self.status_label.setText("Contacting the server (uploading the data the first time)..." if self.remote
                                  else "Starting...")
        return start_worker(submit_job, runner, self.kind, config, resume=resume, previous=previous,
                            on_done=lambda job: self._follow(runner, job, out),
                            on_error=lambda error: self._stopped(f"Not started: {error}", notify=False))

    def start_chain(self, stage1_out: Path, stage2_out: Path, references: Path, stage2_steps: int) -> Any:
        """Stage 1 into ``stage1_out`` now, then stage 2 from it into ``stage2_out`` (aligned to ``references``)."""
        self.set_stage("train")
        self.out.setText(str(stage1_out))
        worker = self.start()
        self.follow = Follow(Path(stage2_out), Path(references), stage2_steps)
        return worker

    def _follow(self, runner: Any, job: str, out: Path) -> None:
        self.runner, self.job, self.out_folder = runner, job, out
        self.seen = 0
        self.started_at = time.monotonic()
        self.events_seen = False
        self.plot.clear()
        self._set_running(True)
        where = self.run_on.currentText()
        self.status_label.setText(f"Started {self.kind} job {job} on {where}: loading the data and models..."
                                  + (" Previews come from the server's run folder." if self.remote else ""))
        self.timer.start()

    def cancel(self) -> Any:
        """Stop the job (it writes a checkpoint first); the runner's wait happens off the UI thread."""
        if self.runner is None or self.job is None:
            return None
        self.follow = None
        self.cancel_button.setEnabled(False)
        self.status_label.setText("Cancelling (the job saves a checkpoint first)...")
        return start_worker(self.runner.cancel, self.job, on_done=lambda _: None,
                            on_error=lambda _: self.cancel_button.setEnabled(True))

    def poll(self) -> Any:
        """One timer tick: ask for the job's state and new events in a worker, unless the last ask is still out."""
        if self.runner is None or self.job is None or self.polling is not None:
            return None
        if not self.events_seen:  # the job has not said anything yet: say that it is preparing, and for how long
            waited = time.monotonic() - self.started_at
            self.status_label.setText(f"{self.kind.capitalize()} job {self.job}: loading the data and models "
                                      f"({waited:.0f} s)...")
        self.polling = start_worker(poll_job, self.runner, self.job, self.seen, on_done=self._apply,
                                    on_error=lambda error: self._stopped(f"Lost the job: {error}", notify=False),
                                    on_finished=self._poll_finished)
        return self.polling

    def _poll_finished(self) -> None:
        self.polling = None

    def _apply(self, news: Poll) -> None:
        if news.status.job_id != self.job or not self.timer.isActive():
            return  # a late answer about a job that ended (or an earlier one)
        self.seen += len(news.events)
        plotted = False
        for event in news.events:
            plotted |= self._handle(event)
        self.plot_stale |= plotted
        now = time.monotonic()
        if self.plot_stale and (now - self.plotted_at >= PLOT_EVERY_S or news.status.finished):
            self.plot.redraw()  # at most every few seconds, however many events came: each redraw repaints the window
            self.plotted_at, self.plot_stale = now, False
        if news.preview is not None:
            self._show_preview(news.preview)
        self.last_status = news.status
        if news.status.finished:
            self._finish(news.status)

    def _handle(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        stage = event.get("stage")
        if kind in ("start", "progress", "resume"):
            self.events_seen = True
        if kind == "progress" and stage == "encode":
            self._show_encoding(event)
            return False
        if kind in ("start", "progress", "resume") and "total" in event:
            self._set_progress(int(event.get("step", 0)), int(event["total"]), f"stage {stage}")
        if kind == "progress":
            loss = event.get("loss")
            eta = event.get("eta_s")
            left = time_left(eta) if isinstance(eta, (int, float)) else None
            self._set_progress(int(event.get("step", 0)), int(event.get("total", 0)), f"stage {stage}", left)
            self.status_label.setText(f"Stage {stage} training" + (f": loss {loss:.4f}" if isinstance(loss, float) else "")
                                      + (f", {left}" if left else "") + ".")
            return self.plot.add(event)
        if kind == "warning":
            show_info(f"AlignFlow: {event.get('message')}")
        return False

    def _set_progress(self, done: int, total: int, what: str, left: str | None = None) -> None:
        """The tab's progress bar; its time left is the status line's (one figure for both)."""
        self.progress.set(done, total, f"{what}: {done} / {total}" + (f", {left}" if left else ""))
        self.progress.setVisible(True)

    def _show_encoding(self, event: dict[str, Any]) -> None:
        """Data preparation: the run encodes every training pair once before its first step (and keeps the result)."""
        done, total = int(event.get("step", 0)), int(event.get("total", 0))
        if event.get("cached"):
            self.status_label.setText(f"Preparing data: the {total} images were encoded by an earlier run on the same "
                                      "files and settings; reused.")
            return
        elapsed = event.get("elapsed")
        left = (time_left(elapsed / done * (total - done)) if isinstance(elapsed, (int, float)) and done else
                "estimating the time")
        self._set_progress(done, total, "preparing data", left)
        self.status_label.setText(f"Preparing data: encoding {total} images, {left} (done once: later runs on the same "
                                  "data reuse it). Max pairs makes a first run quicker.")

    def _show_preview(self, image: Any) -> None:
        """The newest preview in the tab (a picture: cheap); in the viewer too once the user has put it there (a
        napari layer's first creation took 2 s on a loaded machine, so it is not made behind the user's back)."""
        self.last_preview = image
        self.preview.setPixmap(rgb_pixmap(image, max(self.preview.width(), 200)))
        self.preview_button.setEnabled(True)
        if PREVIEW_LAYER in self.viewer.layers:
            self.viewer.layers[PREVIEW_LAYER].data = image

    def show_preview_layer(self) -> Any:
        """The newest preview as the layer *AlignFlow training preview* (updated with every new preview after)."""
        if self.last_preview is None:
            raise InputError("Preview", "a preview of the running job (the first comes after a few steps)", "none yet")
        if PREVIEW_LAYER in self.viewer.layers:
            self.viewer.layers[PREVIEW_LAYER].data = self.last_preview
        else:
            self.viewer.add_image(self.last_preview, name=PREVIEW_LAYER, rgb=True)
            self.viewer.reset_view()  # the preview sheet is wider than what was shown before
        return self.viewer.layers[PREVIEW_LAYER]

    def _finish(self, status: Any) -> None:
        self.timer.stop()
        self.progress.setVisible(False)
        if status.state == "succeeded" and self.remote_job:
            self.status_label.setText(f"Finished on the server; downloading the run folder into {self.out_folder}...")
            failed = f"Finished on the server (job {self.job}), but the download failed"
            start_worker(self.runner.fetch, self.job, self.out_folder, on_done=self._succeeded,
                         on_error=lambda error: self._stopped(f"{failed}: {error}", notify=False))
        elif status.state == "succeeded":
            self._succeeded(Path(status.run_dir))
        elif self.remote_job:
            resume = f"(server job {self.job}: Resume continues it)"
            self._stopped(f"Cancelled; the last checkpoint is kept {resume}." if status.state == "cancelled"
                          else f"Failed: {status.message} {resume}", error=status.state == "failed")
        else:
            self._stopped(f"Cancelled; the last checkpoint is kept in {status.run_dir}/checkpoints."
                          if status.state == "cancelled" else f"Failed: {status.message}", error=status.state == "failed")

    def _succeeded(self, folder: Path) -> None:
        self.results = Path(folder)
        message = f"Finished: the generator is in {folder}/generator."
        if self.remote_job:
            message += f" On the server it is job:{self.job}/generator (stage 2 there starts from it)."
            if self.kind == "train" and not self.init.text():
                self.init.setText(f"job:{self.job}/generator")
        else:
            self.session.set("training", **{"stage1" if self.kind == "train" else "stage2": self.results})
        follow, self.follow = self.follow, None
        if follow is not None and self.kind == "train":
            self._stopped(message + " Stage 2 starts now.", notify=False)
            self.set_stage("align")
            self.init.setText(str(self.results) if not self.remote_job else f"job:{self.job}/generator")
            self.references.setText(str(follow.references))
            self.num_references.setValue(0)  # all of them: the guide saved exactly the references to use
            self.out.setText(str(follow.out))
            self.steps.setValue(follow.steps)
            guarded(self.start)
            return
        self._stopped(message)

    @property
    def remote_job(self) -> bool:
        from alignflow.runners.remote import RemoteRunner

        return isinstance(self.runner, RemoteRunner)

    def _stopped(self, message: str, error: bool = False, notify: bool = True) -> None:
        """The job ended, or could not be started or followed: say why (a worker's error is already a notification),
        and let the user start again."""
        self.timer.stop()
        self.progress.setVisible(False)
        self._set_running(False)
        self.status_label.setText(message)
        if error or notify:
            self.follow = None
        if notify:
            (show_error if error else show_info)(f"AlignFlow training: {message}")

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.resume_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
