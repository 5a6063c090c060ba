"""The AlignFlow dock: every panel as a tab of one dock widget, the guided flow first.

It fits a 1366 x 768 laptop screen: each tab scrolls inside the dock instead of making the window taller (the six
panels stacked needed 2740 px), and the tab bar scrolls sideways when the dock is narrow. The panels are the same
classes the Plugins menu opens one by one, and they share one session per viewer (napari_alignflow.session).
"""

from __future__ import annotations

from typing import Any

import napari
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from ..readers.preferences import prefer_alignflow_readers
from .common import scrollable
from .curation import CurationWidget
from .evaluation import EvaluationWidget
from .export import ExportWidget
from .generation import GenerationWidget
from .guide import GuideWidget
from .masks import MasksWidget
from .references import ReferencesWidget
from .segmentation import SegmentationWidget
from .training import TrainingWidget

PANELS = {"References": ReferencesWidget, "Train": TrainingWidget, "Masks": MasksWidget, "Generate": GenerationWidget,
          "Curate": CurationWidget, "Evaluate": EvaluationWidget, "Segment": SegmentationWidget, "Export": ExportWidget}
WIDTH = 420  # the forms' path fields need about this much; the canvas keeps the rest of a 1366-px screen


class AlignFlowDock(QWidget):
    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.panels: dict[str, Any] = {name: panel(napari_viewer) for name, panel in PANELS.items()}
        self.guide = GuideWidget(napari_viewer, self.panels, self.show_tab)
        self.tabs = QTabWidget()
        self.tabs.setUsesScrollButtons(True)
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(scrollable(self.guide), "Guide")
        for name, panel in self.panels.items():
            self.tabs.addTab(scrollable(panel), name)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.setMinimumWidth(WIDTH)
        added = prefer_alignflow_readers()
        if added:
            show_info("AlignFlow now opens dropped " + ", ".join(p if p != "*/" else "folders" for p in added)
                      + " without asking which reader (Preferences > Plugins changes it)")

    def show_tab(self, name: str) -> None:
        names = [self.tabs.tabText(i) for i in range(self.tabs.count())]
        self.tabs.setCurrentIndex(names.index(name))

    def reset_choices(self, *_: Any) -> None:
        """napari calls this when layers change: every panel's layer lists follow."""
        for panel in (self.guide, *self.panels.values()):
            reset = getattr(panel, "reset_choices", None)
            if reset is not None:
                reset()
