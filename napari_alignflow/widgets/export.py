"""Export panel: the generated pairs of the Generation panel and/or a real dataset folder, written as a training set
(nnU-Net v2 raw, plain folders or OME-Zarr) by the engine's ``export_dataset``, with a manifest row per pair."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
from napari.layers import Image
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QCheckBox, QFormLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from alignflow.errors import InputError

from .common import LayerChoice, PathField, choice_box, guarded, start_worker
from .generation import PAIRS_KEY

# The engine's formats (alignflow.export.FORMATS), worded for the panel.
FORMATS = {"nnU-Net v2 (folder named DatasetXXX_Name)": "nnunet", "plain folders (images/ + masks/)": "folders",
           "OME-Zarr (.ome.zarr)": "ome-zarr"}


def export(out: str, real: str | None, synthetic: list[str], export_format: str, overwrite: bool,
           label_names: list[str] | None, emit: Callable[[Any], None]) -> tuple[Path, int]:
    """The engine's export (off the UI thread); returns the destination and the number of pairs written."""
    from alignflow.export import export_dataset

    written = [0]

    def progress(stage: str, done: int, total: int) -> None:
        written[0] = done
        emit((done, total))

    path = export_dataset(out, real=real, synthetic=synthetic, export_format=export_format, overwrite=overwrite,
                          label_names=label_names, on_progress=progress)
    return path, written[0]


class ExportWidget(QWidget):
    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.exported: Path | None = None

        self.use_generated = QCheckBox("generated pairs")
        self.use_generated.setChecked(True)
        self.generated = LayerChoice(napari_viewer, Image, accept=lambda layer: PAIRS_KEY in layer.metadata,
                                     what="generated images (Generation panel > Generate images)")
        self.use_real = QCheckBox("real pairs (dataset folder)")
        self.real = PathField("Dataset folder with images/ and masks/")
        self.format = choice_box(FORMATS)
        self.out = PathField("Destination (a new folder; nnU-Net: .../DatasetXXX_Name)", new=True)
        self.label_names = QLineEdit()
        self.label_names.setPlaceholderText("optional, background first: background, polyp")
        self.overwrite = QCheckBox("replace the destination if it exists")
        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(lambda: guarded(self.export))
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow(self.use_generated, self.generated)
        form.addRow(self.use_real, self.real)
        form.addRow("Format", self.format)
        form.addRow("Destination", self.out)
        form.addRow("Class names", self.label_names)
        form.addRow("", self.overwrite)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Export the augmented dataset</b>"))
        layout.addLayout(form)
        layout.addWidget(self.export_button)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

    def reset_choices(self, *_: Any) -> None:
        self.generated.reset_choices()

    def export_arguments(self) -> dict[str, Any]:
        """What ``export_dataset`` gets; InputError names a missing field."""
        synthetic = []
        if self.use_generated.isChecked():
            synthetic.append(self.generated.layer("Generated pairs").metadata[PAIRS_KEY])
        real = None
        if self.use_real.isChecked():
            real = str(self.real.path("Real pairs", "a dataset folder with images/ and masks/"))
        if real is None and not synthetic:
            raise InputError("Export", "generated pairs and/or real pairs ticked", "neither")
        names = [name.strip() for name in self.label_names.text().split(",") if name.strip()]
        return {"out": str(self.out.path("Destination", "a folder to export to")), "real": real, "synthetic": synthetic,
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
        message = f"{count} pairs exported to {self.exported} (one manifest row per pair in manifest.json)"
        self.status_label.setText(message)
        show_info(f"AlignFlow: {message}")
