"""References panel: the few target-domain images stage 2 aligns to, picked by hand or suggested by the advisor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_info
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QIcon, QImage, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from alignflow.data import IMAGE_SUFFIXES, read_image, write_image
from alignflow.errors import InputError

from ..arrays import pad_stack, stack_metadata
from ..session import session_for
from ..tooltips import tooltip
from .common import image_slices, report_error, spin_box, start_worker

THUMBNAIL = 72
LAYER = "AlignFlow references"  # "Show as layer"; the Generation panel's grid shows it beside generated images
# Table 4 of the paper: alignment to a single reference is unreliable; the advisor needs 4 to split into halves.
ONE_REFERENCE_WARNING = "Only 1 reference: alignment to a single image is unreliable (paper, Table 4). Add a few more."


@dataclass
class Reference:
    name: str
    image: np.ndarray  # uint8 H x W x 3
    path: Path | None = None  # the file it came from, if any


def thumbnail(image: np.ndarray, side: int = THUMBNAIL) -> QIcon:
    height, width = image.shape[:2]
    data = np.ascontiguousarray(image)
    qimage = QImage(data.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()  # copy: numpy owns data
    return QIcon(QPixmap.fromImage(qimage).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))


def advise(images: Sequence[np.ndarray], names: Sequence[str], k: int, emit: Callable[[Any], None]) -> Any:
    """The advisor (off the UI thread); lazy import keeps the panel quick to open."""
    from alignflow.advisor.advise import advise_references

    return advise_references(list(images), k, names=list(names), on_progress=lambda *progress: emit(progress))


def summary_text(advice: Any) -> str:
    n, k = advice.target["count"], advice.k
    lines = [f"Suggested {k} of {n} images (most representative first)."]
    if advice.enough_k is not None:
        lines.append(f"{advice.enough_k} references already cover the set as well as a random half does.")
    else:
        lines.append(f"Even {len(advice.chosen_mmd)} references do not cover the set as well as a random half: "
                     "the images are diverse, more references help.")
    outliers = [o["name"] for o in advice.outliers if o["outlier"]]
    if outliers:
        lines.append("Unusual images (check them, maybe leave them out): " + ", ".join(outliers[:5]))
    return "\n".join(lines)


class ReferencesWidget(QWidget):
    """Pick references from open image layers or files; "Suggest references" runs the reference advisor."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.references: list[Reference] = []
        self.advice: Any = None
        self.worker: Any = None

        self.list = QListWidget()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setMinimumHeight(2 * THUMBNAIL + 40)
        self.count_label = QLabel()
        self.warning_label = QLabel(ONE_REFERENCE_WARNING)
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: #e0a030")

        add_layers = QPushButton("Add selected layers")
        add_layers.setToolTip("Every image of the selected image layers (each slice of a stack) becomes a reference")
        add_layers.clicked.connect(lambda: self._guarded(self.add_layers))
        add_files = QPushButton("Add files...")
        add_files.clicked.connect(self._choose_files)
        remove = QPushButton("Remove")
        remove.clicked.connect(self.remove_selected)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear)
        save = QPushButton("Save as folder...")
        save.setToolTip("Write the references as PNG files (the Training panel's stage 2 reads a folder)")
        save.clicked.connect(self._choose_save_folder)
        show = QPushButton("Show as layer")
        show.setToolTip(f"Add the references as the image stack '{LAYER}' (the Generation panel's grid shows it)")
        show.clicked.connect(lambda: self._guarded(self.show_as_layer))

        self.k_spin = spin_box(1, 100, 10)
        self.suggest_button = QPushButton("Suggest references")
        self.suggest_button.setToolTip("Pick the k most representative images of the open image layers "
                                       "(selected layers, or all if none is selected)")
        self.suggest_button.clicked.connect(lambda: self._guarded(self.suggest))
        self.k_spin.setToolTip(tooltip("guide.references"))
        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)

        buttons = QGridLayout()
        for i, button in enumerate((add_layers, add_files, remove, clear, save, show)):
            buttons.addWidget(button, i // 2, i % 2)
        suggest_row = QHBoxLayout()
        suggest_row.addWidget(QLabel("k"))
        suggest_row.addWidget(self.k_spin)
        suggest_row.addWidget(self.suggest_button, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Target-domain references</b>"))
        layout.addWidget(self.list)
        layout.addWidget(self.count_label)
        layout.addWidget(self.warning_label)
        layout.addLayout(buttons)
        layout.addLayout(suggest_row)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.summary_label)
        layout.addStretch(1)
        self._refresh()

    # ------------------------------------------------------------------ editing the list
    def add_layers(self, layers: Sequence[Image] | None = None) -> int:
        """Add every 2-D image of ``layers`` (default: the selected image layers); returns how many were added."""
        chosen = [layer for layer in (self.viewer.layers.selection if layers is None else layers) if isinstance(layer, Image)]
        added = [Reference(name, image) for layer in chosen for name, image in image_slices(layer)]
        self._extend(added)
        return len(added)

    def add_files(self, paths: Sequence[str | Path]) -> int:
        added = [Reference(Path(p).name, read_image(p), Path(p)) for p in paths]
        self._extend(added)
        return len(added)

    def remove_selected(self) -> None:
        rows = sorted((self.list.row(item) for item in self.list.selectedItems()), reverse=True)
        for row in rows:
            del self.references[row]
        self._refresh()

    def clear(self) -> None:
        self.references = []
        self._refresh()

    def save_references(self, folder: str | Path) -> list[Path]:
        """Write the references as PNGs into ``folder`` (stage 2's ``references``); returns the files."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for i, reference in enumerate(self.references):
            stem = Path(reference.name).stem.replace("/", "_").replace(" ", "_")
            path = folder / f"{i:03d}_{stem}.png"
            write_image(path, reference.image)
            files.append(path)
        self.session.set("references", references=folder)
        return files

    def show_as_layer(self) -> Image:
        """The references as one image stack (padded to the largest), replacing an earlier one."""
        if not self.references:
            raise InputError("References", "at least one reference (add layers or files first)", "none")
        images = [reference.image for reference in self.references]
        metadata = stack_metadata([r.name for r in self.references], [image.shape for image in images])
        if LAYER in self.viewer.layers:
            self.viewer.layers.remove(LAYER)
        return self.viewer.add_image(pad_stack(images), name=LAYER, rgb=True, metadata=metadata)

    # ------------------------------------------------------------------ the advisor
    def suggest(self, layers: Sequence[Image] | None = None, then: Callable[[], Any] | None = None) -> Any:
        """Run the advisor on ``layers`` (default: the selected, or all, image layers) in a worker; returns it.
        ``then`` runs once the suggestion is the list (e.g. saving it for stage 2)."""
        layers = list(layers or []) or [layer for layer in self.viewer.layers.selection if isinstance(layer, Image)] or \
                 [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        candidates = [pair for layer in layers for pair in image_slices(layer)]
        names = [name for name, _ in candidates]
        self.suggest_button.setEnabled(False)
        self.progress_bar.setVisible(True)
        self.progress_bar.setRange(0, 0)
        self.summary_label.setText(f"Looking at {len(candidates)} images...")
        self.worker = start_worker(
            advise, [image for _, image in candidates], names, self.k_spin.value(),
            on_done=lambda advice: self._apply_advice(advice, candidates, then),
            on_progress=self._show_progress, on_finished=self._advice_finished,
        )
        return self.worker

    def _show_progress(self, progress: tuple[str, int, int]) -> None:
        stage, done, total = progress
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.progress_bar.setFormat(f"{stage}: %v / %m")

    def _apply_advice(self, advice: Any, candidates: list[tuple[str, np.ndarray]], then: Callable[[], Any] | None = None) -> None:
        self.advice = advice
        self.references = [Reference(*candidates[pick["index"]]) for pick in advice.picks]
        self._refresh()
        self.summary_label.setText(summary_text(advice))
        if then is not None:
            self._guarded(then)

    def _advice_finished(self) -> None:
        self.suggest_button.setEnabled(True)
        self.progress_bar.setVisible(False)
        if self.advice is None:
            self.summary_label.setText("")

    # ------------------------------------------------------------------ helpers
    def _extend(self, added: list[Reference]) -> None:
        self.references.extend(added)
        self._refresh()

    def _refresh(self) -> None:
        self.list.clear()
        for reference in self.references:
            item = QListWidgetItem(thumbnail(reference.image), reference.name)
            item.setToolTip(str(reference.path or reference.name))
            self.list.addItem(item)
        count = len(self.references)
        self.count_label.setText(f"{count} reference{'s' if count != 1 else ''}")
        self.warning_label.setVisible(count == 1)

    def _guarded(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception as error:  # noqa: BLE001 - any engine failure becomes a notification, never a dead button
            report_error(error)
            self.suggest_button.setEnabled(True)
            self.progress_bar.setVisible(False)

    def _choose_files(self) -> None:
        pattern = "Images (" + " ".join(f"*{s}" for s in IMAGE_SUFFIXES) + ")"
        files, _ = QFileDialog.getOpenFileNames(self, "Reference images", "", pattern)
        if files:
            self._guarded(lambda: self.add_files(files))

    def _choose_save_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the reference images")
        if folder:
            self._guarded(lambda: show_info(f"AlignFlow: {len(self.save_references(folder))} references written to {folder}"))
