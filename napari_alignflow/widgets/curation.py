"""Curate tab: every generated pair of this viewer's generations in one table (thumbnail, seed, fidelity, mask area),
accepted or rejected one by one with the keyboard; the Export and Evaluate tabs take the accepted pairs.

The selected pair is shown large in the viewer (its image with the mask on top), so Up/Down walks through the pairs
and A / R (or Space) decides each while looking at it. New pairs start accepted, except those with an empty mask.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QGridLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from alignflow.data import read_image, read_mask

from ..session import ACCEPTED, REJECTED, Pair, session_for
from ..tooltips import tooltip
from .common import guarded
from .references import thumbnail

IMAGE_LAYER = "AlignFlow curation image"
MASK_LAYER = "AlignFlow curation mask"
THUMBNAIL = 40
COLUMNS = ("", "pair", "seed", "fidelity", "mask %", "decision")
DECISION_TEXT = {ACCEPTED: "accepted", REJECTED: "rejected"}
KEYS = {Qt.Key.Key_A: ACCEPTED, Qt.Key.Key_R: REJECTED}


def show_pair(viewer: Any, pair: Pair) -> None:
    """A pair's image with its mask on top, in two layers reused for every pair (the Curate and Evaluate tabs)."""
    image, mask = read_image(pair.image), read_mask(pair.mask).astype(np.uint8)
    layers = viewer.layers
    if IMAGE_LAYER in layers and MASK_LAYER in layers and layers[IMAGE_LAYER].data.shape == image.shape:
        layers[IMAGE_LAYER].data = image
        layers[MASK_LAYER].data = mask
    else:
        for name in (IMAGE_LAYER, MASK_LAYER):
            if name in layers:
                layers.remove(name)
        viewer.add_image(image, name=IMAGE_LAYER, rgb=True)
        viewer.add_labels(mask, name=MASK_LAYER, opacity=0.4)
        viewer.reset_view()
    for name in (IMAGE_LAYER, MASK_LAYER):
        layers[name].metadata.update({"pair": pair.name, "file": str(pair.image)})
        layers[name].visible = True


class _NumberItem(QTableWidgetItem):
    """A cell that sorts by its number (empty cells last), not by its text."""

    def __init__(self, value: float | None, text: str):
        super().__init__(text)
        self.number = value

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine = self.number if self.number is not None else float("inf")
        theirs = getattr(other, "number", None)
        return mine < (theirs if theirs is not None else float("inf"))


class CurationWidget(QWidget):
    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setToolTip(tooltip("curation.table"))
        self.table.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(THUMBNAIL + 4)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        header.resizeSection(0, THUMBNAIL + 8)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)  # the pair's name takes what is left
        self.table.setSortingEnabled(True)
        self.table.setMinimumHeight(220)
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.table.installEventFilter(self)
        self.summary = QLabel()
        self.summary.setWordWrap(True)

        buttons = QGridLayout()
        for i, (text, action) in enumerate((
            ("Accept (A)", lambda: self.decide_selected(ACCEPTED)), ("Reject (R)", lambda: self.decide_selected(REJECTED)),
            ("Accept all", lambda: self.session.decide(self.session.state.pairs, ACCEPTED)),
            ("Add pairs folder...", self._choose_folder),
        )):
            button = _button(text, action)
            buttons.addWidget(button, i // 2, i % 2)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Curate the generated pairs</b>"))
        keys = QLabel("Up/Down: next pair; A: accept; R: reject; Space: toggle. Click a column to sort.")
        keys.setWordWrap(True)
        layout.addWidget(keys)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.summary)
        self.session.changed.connect(self._session_changed)
        self.refresh()

    # ------------------------------------------------------------------ the table
    @property
    def pairs(self) -> list[Pair]:
        return self.session.state.pairs

    def _session_changed(self, what: str) -> None:
        if what == "pairs":
            self.refresh()

    def refresh(self) -> None:
        """Rebuild the rows (new pairs appear, decisions update), keeping the selection and the sort order."""
        selected = self.selected_pairs()
        self.table.setSortingEnabled(False)
        self.table.blockSignals(True)
        if self.table.rowCount() != len(self.pairs):
            self.table.setRowCount(len(self.pairs))
            for row, pair in enumerate(self.pairs):
                self._fill_row(row, pair)
        for row in range(self.table.rowCount()):
            pair = self._pair_at(row)
            self.table.item(row, 5).setText(DECISION_TEXT[pair.decision])
        self.table.blockSignals(False)
        self.table.setSortingEnabled(True)
        if selected:
            self.select(selected[0])
        accepted = len(self.session.accepted())
        empty = sum(pair.empty for pair in self.pairs)
        self.summary.setText(f"{accepted} of {len(self.pairs)} pairs accepted (from {self.session.state.batches} "
                             f"generation{'s' if self.session.state.batches != 1 else ''}); the Export and Evaluate tabs "
                             "take the accepted ones." + (f" {empty} with an empty mask stay rejected." if empty else ""))

    def _fill_row(self, row: int, pair: Pair) -> None:
        index = self.pairs.index(pair)
        icon_item = QTableWidgetItem(thumbnail(read_image(pair.image), THUMBNAIL), "")
        icon_item.setData(Qt.ItemDataRole.UserRole, index)
        cells = [icon_item, QTableWidgetItem(pair.name),
                 _NumberItem(pair.seed, "" if pair.seed is None else str(pair.seed)),
                 _NumberItem(pair.fidelity, "" if pair.fidelity is None else f"{pair.fidelity:.2f}"),
                 _NumberItem(pair.mask_fraction, "empty" if pair.empty else f"{100 * pair.mask_fraction:.1f}"),
                 QTableWidgetItem(DECISION_TEXT[pair.decision])]
        for column, item in enumerate(cells):
            item.setData(Qt.ItemDataRole.UserRole, index)
            self.table.setItem(row, column, item)

    def _pair_at(self, row: int) -> Pair:
        return self.pairs[int(self.table.item(row, 0).data(Qt.ItemDataRole.UserRole))]

    def selected_pairs(self) -> list[Pair]:
        rows = sorted({index.row() for index in self.table.selectedIndexes()})
        return [self._pair_at(row) for row in rows]

    def select(self, pair: Pair) -> None:
        for row in range(self.table.rowCount()):
            if self._pair_at(row) is pair:
                self.table.selectRow(row)
                return

    # ------------------------------------------------------------------ deciding
    def decide_selected(self, decision: str | None) -> None:
        """Accept or reject the selected pairs (None toggles each); the selection stays for the next key."""
        chosen = self.selected_pairs()
        if not chosen:
            return
        for pair in chosen:
            pair.decision = decision or (REJECTED if pair.decision == ACCEPTED else ACCEPTED)
        self.session.changed.emit("pairs")

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if watched is self.table and event.type() == QEvent.Type.KeyPress:
            key = event.key()
            if key in KEYS or key == Qt.Key.Key_Space:
                self.decide_selected(KEYS.get(key))
                return True
        return super().eventFilter(watched, event)

    # ------------------------------------------------------------------ the viewer
    def _show_selected(self) -> None:
        chosen = self.selected_pairs()
        if len(chosen) == 1:
            guarded(lambda: self.show_pair(chosen[0]))

    def show_pair(self, pair: Pair) -> None:
        show_pair(self.viewer, pair)

    def add_folder(self, folder: str) -> int:
        added = self.session.add_pairs(folder)
        show_info(f"AlignFlow: {len(added)} generated pairs of {folder} added to the curation list")
        return len(added)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A folder of generated pairs (alignflow generate --out)")
        if folder:
            guarded(lambda: self.add_folder(folder))


def _button(text: str, action: Any) -> QPushButton:
    button = QPushButton(text)
    button.clicked.connect(lambda: guarded(action))
    return button
