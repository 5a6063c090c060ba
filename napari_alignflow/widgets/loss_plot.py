"""A live loss plot for the training panel: matplotlib's object API in a Qt canvas (never pyplot, see
alignflow.plotting: pyplot would switch the process-wide backend under napari)."""

from __future__ import annotations

from collections import defaultdict

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QVBoxLayout, QWidget

# The two terms of Algorithm 1 (the total "loss" is their weighted sum, so it is not drawn again).
CURVES = {"loss_denoising": "denoising (flow matching)", "loss_align": "alignment (MMD)"}


class LossPlot(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.figure = Figure(figsize=(4, 2.4), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.axes = self.figure.add_subplot()
        self.points: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.setMinimumHeight(200)
        self.clear()

    def clear(self) -> None:
        self.points.clear()
        self._draw()

    def add(self, event: dict) -> bool:
        """Record the loss terms of a progress event; returns whether it had any."""
        terms = {key: value for key, value in event.items() if key in CURVES and isinstance(value, (int, float))}
        for key, value in terms.items():
            steps, values = self.points[key]
            steps.append(int(event.get("step", len(steps))))
            values.append(float(value))
        return bool(terms)

    def _draw(self) -> None:
        self.axes.clear()
        for key, (steps, values) in self.points.items():
            self.axes.plot(steps, values, label=CURVES[key], linewidth=1.2)
        self.axes.set_xlabel("step")
        self.axes.set_ylabel("loss")
        if self.points:
            self.axes.legend(fontsize="small")
        self.canvas.draw_idle()

    def redraw(self) -> None:
        self._draw()
