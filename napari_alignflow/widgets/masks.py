"""Synthetic masks panel: draw raw masks from a trained mask generator, then tune the post-processing with sliders.

Post-processing a mask takes a few milliseconds (benchmarks/postprocess_speed.py), so it runs on the UI thread, but
debounced: every slider change restarts one short single-shot timer, and when it fires the chain runs once with the
values the sliders hold *then*. However fast a slider is dragged, at most one run is pending and none queue up.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QSlider, QVBoxLayout, QWidget

from alignflow.masks.postprocess import PostprocessConfig, postprocess_masks

from .common import DEVICES, PathField, choice_box, form, guarded, report_error, spin_box, start_worker

DEBOUNCE_MS = 40
RAW_LAYER = "AlignFlow raw masks"
MASK_LAYER = "AlignFlow synthetic masks"


def draw_raw_masks(folder: str, count: int, steps: int, seed: int, device: str) -> tuple[np.ndarray, int]:
    """Raw grey masks [N, R, R] and the generator's number of classes (off the UI thread)."""
    from alignflow.device import resolve_device
    from alignflow.masks.synthesis import generate_raw_masks, load_mask_generator

    generator = load_mask_generator(folder, resolve_device(device))
    raw = generate_raw_masks(generator, list(range(seed, seed + count)), num_steps=steps)
    return raw.numpy(), generator.config.num_classes


def min_area_maximum(shape: tuple[int, ...]) -> int:
    """The minimum-area slider's range end for masks of ``shape``: a tenth of the mask (a blob that large is no
    speck), so the whole range is usable at 64 px as at 512 px (a fixed 0-1000 px wiped out every 64-px mask)."""
    return max(16, int(shape[0]) * int(shape[1]) // 10)


class LabelledSlider(QWidget):
    """An integer QSlider showing its value scaled to the unit it stands for."""

    def __init__(self, minimum: int, maximum: int, value: int, scale: float = 1.0, parent: QWidget | None = None):
        super().__init__(parent)
        self.scale = scale
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(minimum, maximum)
        self.slider.setValue(value)
        self.label = QLabel()
        self.label.setMinimumWidth(36)
        self.slider.valueChanged.connect(self._show)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.label)
        self._show()

    def value(self) -> float:
        return self.slider.value() * self.scale

    def set_maximum(self, maximum: int) -> None:
        """A new range end; the value is clamped into it (Qt does that and emits valueChanged if it moved)."""
        self.slider.setMaximum(maximum)
        self._show()

    def _show(self) -> None:
        self.label.setText(f"{self.value():g}")


class MasksWidget(QWidget):
    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.raw: np.ndarray | None = None
        self.worker: Any = None
        self.postprocess_runs = 0  # how many times the chain ran (the debouncing is tested by it)

        self.generator = PathField("Trained mask generator (alignflow train-masks run folder)")
        self.count = spin_box(1, 64, 8)
        self.steps = spin_box(1, 200, 28)
        self.seed = spin_box(0, 2**31 - 1)
        self.device = choice_box(DEVICES)
        self.generate_button = QPushButton("Generate masks")
        self.generate_button.clicked.connect(lambda: guarded(self.generate))

        defaults = PostprocessConfig()
        self.num_classes = spin_box(2, 16)
        self.threshold = LabelledSlider(5, 95, round(defaults.threshold * 100), 0.01)
        self.sigma = LabelledSlider(0, 50, round(defaults.sigma * 10), 0.1)
        self.opening = LabelledSlider(0, 8, defaults.opening_radius)
        self.closing = LabelledSlider(0, 8, defaults.closing_radius)
        self.min_area = LabelledSlider(0, 1000, defaults.min_area)
        self.fill_holes = QCheckBox("fill holes")
        self.fill_holes.setChecked(defaults.fill_holes)
        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(DEBOUNCE_MS)
        self.debounce.timeout.connect(self.apply_postprocessing)
        for slider in (self.threshold, self.sigma, self.opening, self.closing, self.min_area):
            slider.slider.valueChanged.connect(self.debounce.start)
        self.fill_holes.toggled.connect(self.debounce.start)
        self.num_classes.valueChanged.connect(self.debounce.start)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)

        source = form("masks", [("generator", "Generator", self.generator), ("count", "Masks", self.count),
                                ("steps", "Sampling steps", self.steps), ("seed", "First seed", self.seed),
                                ("device", "Device", self.device)])
        sliders = form("masks", [("num_classes", "Classes (K)", self.num_classes), ("threshold", "Threshold", self.threshold),
                                 ("sigma", "Blur sigma (px)", self.sigma), ("opening", "Opening radius", self.opening),
                                 ("closing", "Closing radius", self.closing), ("min_area", "Min. area (px)", self.min_area)])
        sliders.addRow(self.fill_holes)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Synthetic masks</b>"))
        layout.addLayout(source)
        layout.addWidget(self.generate_button)
        layout.addWidget(QLabel("<b>Post-processing</b> (live preview)"))
        layout.addLayout(sliders)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

    def postprocess_config(self) -> PostprocessConfig:
        return PostprocessConfig(num_classes=self.num_classes.value(), threshold=self.threshold.value(),
                                 sigma=self.sigma.value(), opening_radius=int(self.opening.value()),
                                 closing_radius=int(self.closing.value()), min_area=int(self.min_area.value()),
                                 fill_holes=self.fill_holes.isChecked())

    # ------------------------------------------------------------------ generation
    def generate(self) -> Any:
        folder = str(self.generator.path("Generator", "a trained mask generator folder"))
        self.generate_button.setEnabled(False)
        self.status_label.setText(f"Generating {self.count.value()} masks...")
        self.worker = start_worker(draw_raw_masks, folder, self.count.value(), self.steps.value(), self.seed.value(),
                                   self.device.currentText(), on_done=self._show_raw,
                                   on_finished=lambda: self.generate_button.setEnabled(True))
        return self.worker

    def _show_raw(self, result: tuple[np.ndarray, int]) -> None:
        self.raw, num_classes = result
        self.num_classes.blockSignals(True)
        self.num_classes.setValue(num_classes)
        self.num_classes.blockSignals(False)
        self.min_area.slider.blockSignals(True)  # the run below uses the clamped value
        self.min_area.set_maximum(min_area_maximum(self.raw.shape[-2:]))
        self.min_area.slider.blockSignals(False)
        if RAW_LAYER in self.viewer.layers:
            self.viewer.layers[RAW_LAYER].data = self.raw
        else:
            self.viewer.add_image(self.raw, name=RAW_LAYER, colormap="gray", contrast_limits=(0.0, 1.0))
        self.status_label.setText(f"{len(self.raw)} raw masks ({self.raw.shape[-1]} px); move the sliders to tune them.")
        self.apply_postprocessing()

    # ------------------------------------------------------------------ post-processing
    def apply_postprocessing(self) -> None:
        """Re-run the chain on every raw mask with the sliders' current values and update the Labels layer."""
        if self.raw is None:
            return
        try:
            masks = postprocess_masks(self.raw, self.postprocess_config())
        except Exception as error:  # noqa: BLE001
            report_error(error)
            return
        self.postprocess_runs += 1
        if MASK_LAYER in self.viewer.layers:
            self.viewer.layers[MASK_LAYER].data = masks
        else:
            self.viewer.add_labels(masks, name=MASK_LAYER, opacity=0.6)
