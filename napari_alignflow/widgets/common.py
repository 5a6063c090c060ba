"""Pieces every panel uses: path fields, engine errors as napari notifications, layer data as engine images."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QSpinBox, QWidget
from skimage.color import gray2rgb
from skimage.exposure import rescale_intensity
from skimage.util import img_as_ubyte

from alignflow.errors import InputError


class PathField(QWidget):
    """A line edit with a "Browse..." button for a folder (or a file)."""

    def __init__(self, placeholder: str, folder: bool = True, parent: QWidget | None = None):
        super().__init__(parent)
        self.folder = folder
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addWidget(browse)

    def _browse(self) -> None:
        chosen = (QFileDialog.getExistingDirectory(self, self.edit.placeholderText()) if self.folder
                  else QFileDialog.getOpenFileName(self, self.edit.placeholderText())[0])
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


def report_error(error: BaseException) -> None:
    """An engine error as a napari notification with its reason (an InputError already names file and expectation)."""
    message = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
    show_error(f"AlignFlow: {message}")


class _Relay(QObject):
    """Carries values from a worker thread to the UI thread (a queued Qt signal)."""

    sent = Signal(object)


def start_worker(function: Callable[..., Any], *args: Any, on_done: Callable[[Any], None],
                 on_progress: Callable[[Any], None] | None = None, on_finished: Callable[[], None] | None = None,
                 **kwargs: Any) -> Any:
    """Run ``function`` off the UI thread (napari's thread worker, for jobs of seconds); errors become notifications.

    With ``on_progress``, ``function`` gets ``emit=`` (callable from its thread) whose values reach ``on_progress``
    on the UI thread, e.g. from an engine ``on_progress`` callback.
    """
    relay = _Relay()
    if on_progress is not None:
        relay.sent.connect(on_progress)
        kwargs["emit"] = relay.sent.emit
    worker = thread_worker(function)(*args, **kwargs)
    worker.returned.connect(on_done)
    worker.errored.connect(report_error)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.relay = relay  # kept alive as long as the worker
    worker.start()
    return worker


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """A 2-D grey or RGB(A) slice of any dtype as the engine's uint8 H x W x 3 (min-max stretched if not uint8)."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if array.dtype != np.uint8:
        array = img_as_ubyte(rescale_intensity(array.astype(np.float32), out_range=(0.0, 1.0)))
    return gray2rgb(array) if array.ndim == 2 else array


def image_slices(layer: Image) -> list[tuple[str, np.ndarray]]:
    """Every 2-D image of a layer (a stack contributes one per slice), named ``layer`` or ``layer [i]``."""
    data = np.asarray(layer.data)
    plane_dims = 3 if layer.rgb else 2
    if data.ndim == plane_dims:
        return [(layer.name, to_rgb_uint8(data))]
    stack = data.reshape(-1, *data.shape[-plane_dims:])
    names = layer.metadata.get("names") if isinstance(layer.metadata, dict) else None
    labels = names if names is not None and len(names) == len(stack) else [f"{layer.name} [{i}]" for i in range(len(stack))]
    return [(label, to_rgb_uint8(plane)) for label, plane in zip(labels, stack)]
