"""Figures without pyplot: matplotlib's object API never switches the process-wide backend, so plots are safe
from worker threads and inside napari, whose own matplotlib widgets depend on that backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignflow.atomic import atomic_open


def new_figure(**kwargs: Any) -> Any:
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_png(figure: Any, path: Path | str) -> Path:
    """Render with the Agg canvas and write the PNG atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    path = Path(path)
    with atomic_open(path) as handle:
        figure.savefig(handle, format="png")
    return path
