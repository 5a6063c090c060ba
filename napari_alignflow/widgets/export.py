"""Export panel: the accepted generated pairs of the Curate tab (every generation, not only the last), a real dataset
folder and/or labelled target pairs (say, the references labelled in napari), written as a training set (nnU-Net v2
raw, plain folders or OME-Zarr) by the engine's ``export_dataset``, with a manifest row per pair; optionally with
cases repeated so that the generated and target pairs make a chosen share of a uniform draw."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from alignflow.data import cache_root
from alignflow.errors import InputError

from ..session import Pair, session_for, write_accepted_pairs
from .common import PathField, choice_box, form, guarded, start_worker

# The engine's formats (alignflow.export.FORMATS), worded for the panel.
FORMATS = {"nnU-Net v2 (folder named DatasetXXX_Name)": "nnunet", "plain folders (images/ + masks/)": "folders",
           "OME-Zarr (.ome.zarr)": "ome-zarr"}


def accepted_folder() -> Path:
    """A new folder in the plugin's cache for the accepted pairs of one export or evaluation."""
    return cache_root() / "plugin-accepted" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def export(out: str, real: str | None, pairs: list[Pair], export_format: str, overwrite: bool,
           label_names: list[str] | None, emit: Callable[[Any], None], target: str | None = None,
           synthetic_share: float | None = None) -> tuple[Path, int]:
    """The engine's export (off the UI thread) of ``real``, the accepted ``pairs`` and the labelled ``target`` pairs;
    returns the destination and the number of pairs written."""
    from alignflow.export import export_dataset

    synthetic = [write_accepted_pairs(pairs, accepted_folder())] if pairs else []
    written = [0]

    def progress(stage: str, done: int, total: int) -> None:
        written[0] = done
        emit((done, total))

    path = export_dataset(out, real=real, synthetic=synthetic, target=target, synthetic_share=synthetic_share,
                          export_format=export_format, overwrite=overwrite, label_names=label_names, on_progress=progress)
    return path, written[0]


class ExportWidget(QWidget):
    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.worker: Any = None
        self.exported: Path | None = None

        self.use_generated = QCheckBox("accepted generated pairs")
        self.use_generated.setChecked(True)
        self.generated_count = QLabel()
        self.use_real = QCheckBox("real pairs (dataset folder)")
        self.real = PathField("Dataset folder with images/ and masks/")
        self.use_target = QCheckBox("labelled target pairs (dataset folder)")
        self.target = PathField("Target-domain images/ and masks/, e.g. your labelled references")
        self.use_share = QCheckBox("repeat cases: generated + target pairs make a share")
        self.share = QDoubleSpinBox()
        self.share.setRange(0.05, 0.95)
        self.share.setSingleStep(0.05)
        self.share.setValue(0.25)
        self.share.setEnabled(False)
        self.use_share.toggled.connect(self.share.setEnabled)
        self.format = choice_box(FORMATS)
        self.out = PathField("Destination (a new folder; nnU-Net: .../DatasetXXX_Name)", new=True)
        self.label_names = QLineEdit()
        self.label_names.setPlaceholderText("optional, background first: background, polyp")
        self.overwrite = QCheckBox("replace the destination if it exists")
        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(lambda: guarded(self.export))
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)

        settings = form("export", [("generated", "", self.use_generated), ("generated", "", self.generated_count),
                                   ("real", "", self.use_real), ("real", "", self.real),
                                   ("target", "", self.use_target), ("target", "", self.target),
                                   ("share", "", self.use_share), ("share", "Share", self.share),
                                   ("format", "Format", self.format), ("out", "Destination", self.out),
                                   ("names", "Class names", self.label_names), ("overwrite", "", self.overwrite)])
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Export the augmented dataset</b>"))
        layout.addLayout(settings)
        layout.addWidget(self.export_button)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        self.session.changed.connect(self._session_changed)
        self._session_changed("pairs")

    def _session_changed(self, what: str) -> None:
        state = self.session.state
        if what == "pairs":
            self.generated_count.setText(f"{len(self.session.accepted())} accepted of {len(state.pairs)} generated "
                                         "(Curate tab)")
        if what == "source" and state.source is not None and not self.real.text():
            self.real.setText(str(state.source))
            self.use_real.setChecked(True)

    def export_arguments(self) -> dict[str, Any]:
        """What ``export`` gets; InputError names a missing field."""
        pairs = []
        if self.use_generated.isChecked():
            pairs = self.session.accepted()
            if not pairs:
                raise InputError("Generated pairs", "accepted generated pairs (Generate tab, then Curate tab)", "none")
        real = None
        if self.use_real.isChecked():
            real = str(self.real.path("Real pairs", "a dataset folder with images/ and masks/"))
        target = None
        if self.use_target.isChecked():
            target = str(self.target.path("Target pairs", "a dataset folder with images/ and masks/ of the target domain"))
        if real is None and not pairs and target is None:
            raise InputError("Export", "generated, real and/or target pairs ticked", "none")
        names = [name.strip() for name in self.label_names.text().split(",") if name.strip()]
        return {"out": str(self.out.path("Destination", "a folder to export to")), "real": real, "pairs": pairs,
                "target": target, "synthetic_share": self.share.value() if self.use_share.isChecked() else None,
                "export_format": FORMATS[self.format.currentText()], "overwrite": self.overwrite.isChecked(),
                "label_names": names or None}

    def export(self) -> Any:
        arguments = self.export_arguments()
        self.export_button.setEnabled(False)
        self.status_label.setText(f"Exporting to {arguments['out']}...")
        self.worker = start_worker(
            export, **arguments, on_done=self._done, progress_desc="AlignFlow export",
            on_error=lambda error: self.status_label.setText(f"Not exported: {error}"),
            on_finished=lambda: self.export_button.setEnabled(True))
        return self.worker

    def _done(self, result: tuple[Path, int]) -> None:
        self.exported, count = result
        from alignflow.export import copies_summary

        message = f"{count} pairs exported to {self.exported}{copies_summary(self.exported)} (one manifest row per case in manifest.json)"
        self.status_label.setText(message)
        self.session.set("export", exported=self.exported)
        show_info(f"AlignFlow: {message}")
