"""A live loss plot for the training panel: matplotlib's object API in a Qt canvas (never pyplot, see
alignflow.plotting: pyplot would switch the process-wide backend under napari).

Cheap on the UI thread: one Line2D per curve is updated in place (no axes.clear(), no tight_layout per draw, which
lays the figure out by drawing it twice), and the canvas redraws when Qt next paints. Every point has a marker, so a
short run's three points read as points, and a curve with one point is visible.
"""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QVBoxLayout, QWidget

# The two terms of Algorithm 1 (the total "loss" is their weighted sum, so it is not drawn again).
CURVES = {"loss_denoising": "denoising (flow matching)", "loss_align": "alignment (MMD)"}
MARKERS = {"loss_denoising": "o", "loss_align": "s"}


class LossPlot(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.figure = Figure(figsize=(4, 2.2))
        self.figure.subplots_adjust(left=0.16, right=0.97, top=0.95, bottom=0.2)  # fixed: no per-draw layout pass
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.axes = self.figure.add_subplot()
        self.axes.set_xlabel("step", fontsize="small")
        self.axes.set_ylabel("loss", fontsize="small")
        self.axes.tick_params(labelsize="small")
        self.points: dict[str, tuple[list[int], list[float]]] = {}
        self.lines: dict[str, object] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.setMinimumHeight(160)
        self.draws = 0  # how often the plot was redrawn (tests, benchmarks)
        self.clear()

    def clear(self) -> None:
        for line in self.lines.values():
            line.remove()
        self.lines.clear()
        self.points = {key: ([], []) for key in CURVES}
        legend = self.axes.get_legend()
        if legend is not None:
            legend.remove()
        self.canvas.draw_idle()

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
            if key not in self.lines:
                (self.lines[key],) = self.axes.plot(steps, values, label=CURVES[key], linewidth=1.2,
                                                    marker=MARKERS[key], markersize=3)
                self.axes.legend(fontsize="small")
            else:
                self.lines[key].set_data(steps, values)
        self.axes.relim()
        self.axes.autoscale_view()
        self.draws += 1
        self.canvas.draw_idle()
