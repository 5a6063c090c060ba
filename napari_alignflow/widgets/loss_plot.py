"""A live loss plot for the training panel, drawn with pyqtgraph.

Why not matplotlib: one render of a small matplotlib figure took 150-280 ms of the UI thread on a loaded 2-core
machine (benchmarks/plugin_event_loop.py counted each render as a stall), and rendered in a worker thread it held
Python's GIL just as long. pyqtgraph draws with Qt itself; new points only replace the curves' data, a few
milliseconds. Every point has a marker, so a short run's three points read as points and a curve with one point is
visible.
"""

from __future__ import annotations

import pyqtgraph as pg
from qtpy.QtWidgets import QVBoxLayout, QWidget

# The two terms of Algorithm 1 (the total "loss" is their weighted sum, so it is not drawn again).
CURVES = {"loss_denoising": "denoising (flow matching)", "loss_align": "alignment (MMD)"}
STYLES = {"loss_denoising": ("o", (31, 119, 180)), "loss_align": ("s", (255, 127, 14))}
HEIGHT = 200


class LossPlot(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.view = pg.PlotWidget(background="w")
        self.view.setFixedHeight(HEIGHT)  # room below for the preview on a laptop screen
        self.view.setLabel("bottom", "step")
        self.view.setLabel("left", "loss")
        self.view.showGrid(x=True, y=True, alpha=0.2)
        self.view.setMouseEnabled(x=False, y=False)  # a live plot follows its data; no accidental pan or zoom
        self.view.addLegend(offset=(-10, 10))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        self.points: dict[str, tuple[list[int], list[float]]] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.draws = 0  # how often the curves were updated (tests, benchmarks)
        self.clear()

    def clear(self) -> None:
        for curve in self.curves.values():
            self.view.removeItem(curve)
        self.curves.clear()
        self.points = {key: ([], []) for key in CURVES}

    def add(self, event: dict) -> bool:
        """Record the loss terms of a progress event; returns whether it had any."""
        terms = {key: value for key, value in event.items() if key in CURVES and isinstance(value, (int, float))}
        for key, value in terms.items():
            steps, values = self.points[key]
            steps.append(int(event.get("step", len(steps))))
            values.append(float(value))
        return bool(terms)

    def redraw(self) -> None:
        for key, (steps, values) in self.points.items():
            if not steps:
                continue
            if key not in self.curves:  # a curve (and its legend entry) once it has a point
                symbol, colour = STYLES[key]
                self.curves[key] = self.view.plot(name=CURVES[key], pen=pg.mkPen(colour, width=1.5), symbol=symbol,
                                                  symbolSize=5, symbolBrush=colour, symbolPen=None)
            self.curves[key].setData(steps, values)
        self.draws += 1
