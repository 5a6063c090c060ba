"""Pieces every panel uses: path fields, layer pickers, engine errors as napari notifications, workers with napari
progress bars, layer data as engine images."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Layer
from napari.utils import progress
from napari.utils.notifications import show_error
from qtpy.QtCore import QCoreApplication, QObject, Qt, QThreadPool, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QWidget,
)
from skimage.color import gray2rgb
from skimage.exposure import rescale_intensity
from skimage.util import img_as_ubyte
from superqt.utils import thread_worker

from alignflow.errors import InputError

from ..tooltips import tooltip

DEVICES = ("auto", "cpu", "cuda", "mps")


class PathField(QWidget):
    """A line edit with a "Browse..." button for a folder (or a file; with ``new``, a name that may not exist yet)."""

    def __init__(self, placeholder: str, folder: bool = True, parent: QWidget | None = None, new: bool = False):
        super().__init__(parent)
        self.folder = folder
        self.new = new
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addWidget(browse)

    def _browse(self) -> None:
        title = self.edit.placeholderText()
        if self.new:
            chosen = QFileDialog.getSaveFileName(self, title)[0]
        elif self.folder:
            chosen = QFileDialog.getExistingDirectory(self, title)
        else:
            chosen = QFileDialog.getOpenFileName(self, title)[0]
        if chosen:
            self.edit.setText(chosen)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt naming, so the field reads like a QLineEdit
        self.edit.setText(text)

    def path(self, name: str, expected: str) -> Path:
        """The path typed in, or an InputError naming the field when it is empty."""
        if not self.text():
            raise InputError(name, expected, "nothing")
        return Path(self.text()).expanduser()


def form(panel: str, rows: Iterable[tuple[str, str, QWidget]]) -> QFormLayout:
    """A form declared as rows of (key, label, widget): every widget gets its tooltip from
    :mod:`napari_alignflow.tooltips` (``panel.key``, or a shared ``key``); an empty label spans the widget over both
    columns (a check box names itself)."""
    layout = QFormLayout()
    layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    for key, label, widget in rows:
        widget.setToolTip(tooltip(f"{panel}.{key}"))
        if label:
            layout.addRow(label, widget)
        else:
            layout.addRow(widget)
    return layout


def set_row_visible(layout: QFormLayout, widget: QWidget, visible: bool) -> None:
    """Show or hide one row of a :func:`form` (its label too)."""
    widget.setVisible(visible)
    label = layout.labelForField(widget)
    if label is not None:
        label.setVisible(visible)


def scrollable(widget: QWidget) -> QScrollArea:
    """``widget`` in a vertical scroll area without a frame: a tab taller than a laptop screen scrolls instead of
    forcing the window taller."""
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    return area


def grid_of(viewer: Any) -> Any:
    """The viewer's grid settings: ``viewer.canvas.grid`` since napari 0.9 (``viewer.grid`` is deprecated there)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def spin_box(low: int, high: int, value: int | None = None) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    if value is not None:
        box.setValue(value)
    return box


def choice_box(items: Iterable[str]) -> QComboBox:
    box = QComboBox()
    box.addItems(list(items))
    return box


class LayerChoice(QComboBox):
    """A drop-down of the viewer's layers of one type (optionally filtered), refreshed when the list opens and by the
    panel's ``reset_choices`` (napari calls it when layers are added, removed, renamed or moved)."""

    def __init__(self, viewer: Any, layer_type: type[Layer], accept: Callable[[Layer], bool] | None = None,
                 what: str | None = None, prefer: str | None = None, optional: str | None = None):
        super().__init__()
        self.viewer, self.layer_type, self.accept = viewer, layer_type, accept
        self.what = what or f"an open {layer_type.__name__} layer"  # for the error when none is chosen
        self.prefer = prefer  # the layer chosen when it appears and nothing else is chosen yet
        self.optional = optional  # an entry meaning "no layer", listed first
        self.reset_choices()

    def candidates(self) -> list[Layer]:
        return [layer for layer in self.viewer.layers if isinstance(layer, self.layer_type) and (self.accept is None or self.accept(layer))]

    def reset_choices(self, *_: Any) -> None:
        current = self.currentText()
        names = ([self.optional] if self.optional else []) + [layer.name for layer in self.candidates()]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names and current != self.optional:
            self.setCurrentText(current)
        elif self.prefer in names:
            self.setCurrentText(self.prefer)
        self.blockSignals(False)

    def showPopup(self) -> None:  # noqa: N802 - Qt override
        self.reset_choices()
        super().showPopup()

    def layer(self, field: str) -> Layer | None:
        """The chosen layer (None for the optional entry), or an InputError naming ``field``."""
        name = self.currentText()
        if self.optional and name == self.optional:
            return None
        if not name or name not in self.viewer.layers:
            raise InputError(field, self.what, "none" if not name else f"{name!r}, which is no longer open")
        return self.viewer.layers[name]


def report_error(error: BaseException) -> None:
    """An engine error as a napari notification with its reason (an InputError already names file and expectation)."""
    message = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
    show_error(f"AlignFlow: {message}")


def guarded(action: Callable[[], Any]) -> None:
    """Run a button's action; any failure becomes a notification with its reason, never a dead button."""
    try:
        action()
    except Exception as error:  # noqa: BLE001 - the user sees every failure, named
        report_error(error)


class _Relay(QObject):
    """Carries values from a worker thread to the UI thread (a queued Qt signal)."""

    sent = Signal(object)


# The bar shows the count and the panel's own time-left figure (its postfix) instead of tqdm's estimate, so the bar
# and the panel's status line never disagree (tqdm's rate counts the seconds between polls, not between steps).
OWN_TIME_LEFT = "{l_bar}{bar}| {n_fmt}/{total_fmt}{postfix}"


class ProgressBar:
    """A napari progress bar (the activity area, bottom right) fed ``(done, total)`` on the UI thread; a new total
    (e.g. the next training stage) starts a new bar. ``set_postfix`` shows a time-left figure the caller computed."""

    def __init__(self, desc: str):
        self.desc = desc
        self.bar: progress | None = None
        self.postfix = ""

    def update(self, done: int, total: int) -> None:
        if self.bar is None or self.bar.total != total or self.bar.desc != self.desc:
            self.close()
            self.bar = progress(total=total, desc=self.desc, bar_format=OWN_TIME_LEFT)
        self.bar.update(done - self.bar.n)

    def set_postfix(self, text: str) -> None:
        if self.bar is not None and text != self.postfix:
            self.postfix = text
            self.bar.set_postfix_str(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.postfix = ""


def start_worker(function: Callable[..., Any], *args: Any, on_done: Callable[[Any], None],
                 on_progress: Callable[[Any], None] | None = None, on_finished: Callable[[], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None, progress_desc: str | None = None,
                 **kwargs: Any) -> Any:
    """Run ``function`` off the UI thread (napari's thread worker, for jobs of seconds to minutes); errors become
    a napari notification with their reason (and go to ``on_error``).

    With ``on_progress`` or ``progress_desc``, ``function`` gets ``emit=`` (callable from its thread) whose values
    reach ``on_progress`` on the UI thread, e.g. from an engine ``on_progress`` callback. With ``progress_desc`` the
    values are ``(done, total)`` pairs and drive a napari progress bar, closed when the worker ends.
    """
    relay = _Relay()
    bar = ProgressBar(progress_desc) if progress_desc else None
    if bar is not None:
        relay.sent.connect(lambda value: bar.update(*value))
    if on_progress is not None:
        relay.sent.connect(on_progress)
    if on_progress is not None or bar is not None:
        kwargs["emit"] = relay.sent.emit
    # superqt's worker, which napari's wraps: napari's would also relay the error to its own notification (a second
    # one, without "AlignFlow") and re-raise it in the event loop.
    worker = thread_worker(function, start_thread=False, connect={"errored": report_error})(*args, **kwargs)
    worker.returned.connect(on_done)
    if on_error is not None:
        worker.errored.connect(on_error)
    if bar is not None:
        worker.finished.connect(bar.close)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.relay = relay  # kept alive as long as the worker
    # True once every callback above has run on the UI thread (the worker's own flags change on its thread, earlier).
    worker.handled = False
    worker.finished.connect(lambda: setattr(worker, "handled", True))
    _RUNNING.add(worker)  # the pool holds the C++ side only; this keeps the Python worker alive until it ends
    worker.finished.connect(lambda: _RUNNING.discard(worker))
    worker_pool().start(worker)
    return worker


_RUNNING: set[Any] = set()
_POOL: list[QThreadPool] = []


def worker_pool() -> QThreadPool:
    """The plugin's own thread pool, not Qt's global one (where superqt starts workers by default).

    Qt converts and scales images (e.g. the activity dock's animated icon, shown when a progress bar opens) with
    tasks on its global pool, whose size is the number of cores, while the UI thread waits holding Python's GIL.
    With both threads of a 2-core machine taken by the plugin's workers, which need the GIL to go on, that wait
    never ended (seen while the training panel polled and cancelled). Workers here leave the global pool to Qt.
    """
    if not _POOL:
        pool = QThreadPool()
        pool.setMaxThreadCount(8)  # the plugin's workers mostly wait (files, HTTP, a cancelled job's checkpoint)
        app = QCoreApplication.instance()
        if app is not None:  # a worker that ends after the application's objects are gone aborts the process
            app.aboutToQuit.connect(lambda: wait_for_workers(QUIT_WAIT_MS))
        _POOL.append(pool)
    return _POOL[0]


QUIT_WAIT_MS = 10_000


def wait_for_workers(timeout_ms: int) -> bool:
    """Block until every worker of the plugin's pool has ended (at most ``timeout_ms``); True if they all did."""
    return worker_pool().waitForDone(timeout_ms)


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """A 2-D grey or RGB(A) slice of any dtype as the engine's uint8 H x W x 3 (min-max stretched if not uint8)."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if array.dtype != np.uint8:
        array = img_as_ubyte(rescale_intensity(array.astype(np.float32), out_range=(0.0, 1.0)))
    return gray2rgb(array) if array.ndim == 2 else array


def current_index(viewer: Any, layer: Layer) -> int:
    """The slice of a stack layer the viewer shows (its first axis at the viewer's current step)."""
    axis = viewer.dims.ndim - layer.ndim
    return int(np.clip(viewer.dims.current_step[axis], 0, layer.data.shape[0] - 1))


def layer_planes(layer: Layer, plane_ndim: int, index: int | None = None, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Every 2-D plane of a layer (a stack contributes one per slice; only slice ``index`` when given), named by the
    layer's metadata ``names`` or ``layer [i]``, and cropped to the metadata ``sizes`` (a dataset folder's stack pads
    pairs of different sizes). Planes of a lazy (dask) layer are read here, one by one (only the first ``limit``)."""
    data = layer.data
    if data.ndim == plane_ndim:
        return [(layer.name, np.asarray(data))]
    if data.ndim < plane_ndim:
        raise InputError(f"layer {layer.name!r}", f"a {plane_ndim}-D plane or a stack of them", f"{data.ndim}-D data")
    count = int(np.prod(data.shape[: data.ndim - plane_ndim]))
    stack = data.reshape(count, *data.shape[data.ndim - plane_ndim :])
    metadata = layer.metadata if isinstance(layer.metadata, dict) else {}
    names, sizes = metadata.get("names"), metadata.get("sizes")
    names = names if names is not None and len(names) == count else [f"{layer.name} [{i}]" for i in range(count)]
    sizes = sizes if sizes is not None and len(sizes) == count else None
    chosen = range(count if limit is None else min(count, limit)) if index is None else [index]
    planes = []
    for i in chosen:
        plane = np.asarray(stack[i])
        if sizes is not None:
            plane = plane[: sizes[i][0], : sizes[i][1]]
        planes.append((names[i], plane))
    return planes


def image_slices(layer: Image, index: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Every 2-D image of a layer (or slice ``index`` of a stack) as the engine's uint8 RGB, with its name."""
    return [(name, to_rgb_uint8(plane)) for name, plane in layer_planes(layer, 3 if layer.rgb else 2, index)]
