"""Segmentation panel: a trained MedFlowSeg on an image layer. Adds the STAPLE-fused labels, a per-pixel uncertainty
map (colormap + colorbar) and the ensemble's individual samples as layers (docs/segmentation.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import napari
import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..arrays import pad_stack, pad_to, stack_metadata, stack_shape
from .common import (
    DEVICES,
    LayerChoice,
    PathField,
    choice_box,
    current_index,
    guarded,
    image_slices,
    spin_box,
    start_worker,
)

LABELS_LAYER = "AlignFlow segmentation"
UNCERTAINTY_LAYER = "AlignFlow uncertainty"
SAMPLES_LAYER = "AlignFlow ensemble samples"
UNCERTAINTY_COLORMAP = "magma"
# The engine's kinds (alignflow.segmentation.uncertainty.UNCERTAINTY_KINDS), worded for the panel.
UNCERTAINTY_CHOICES = {"entropy of the samples": "entropy", "variance of the samples": "variance",
                       "STAPLE posterior": "staple"}
FUSIONS = {"STAPLE (the paper)": "staple", "majority vote": "vote"}
WHICH = {"all images of the layer": False, "only the image shown": True}


def segment(folder: str, images: list[np.ndarray], samples: int, steps: int, seed: int, fusion: str, device: str,
            emit: Callable[[Any], None]) -> Any:
    """The engine's segmentation of ``images`` (off the UI thread); image i's ensemble is seeded with ``seed + i``."""
    from alignflow.segmentation.inference import load_segmenter, segment_images

    segmenter = load_segmenter(folder, device)
    emit((0, len(images)))
    return segment_images(segmenter, images, num_samples=samples, num_steps=steps, seed=seed, fusion=fusion,
                          on_image=lambda done, total: emit((done, total)))


class SegmentationWidget(QWidget):
    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.result: Any = None
        self.names: list[str] = []

        self.segmenter = PathField("Trained MedFlowSeg (a train-segmenter run folder or its segmenter/ folder)")
        self.image = LayerChoice(napari_viewer, Image,
                                 accept=lambda layer: layer.name != UNCERTAINTY_LAYER,
                                 what="an Image layer to segment (open a scan first)")
        self.which = choice_box(WHICH)
        self.steps = spin_box(1, 500, 50)
        self.steps.setToolTip("Euler steps per sample (paper: 50)")
        self.samples = spin_box(1, 64, 10)
        self.samples.setToolTip("Ensemble size M: samples per image, fused into one label map (paper: 10)")
        self.fusion = choice_box(FUSIONS)
        self.seed = spin_box(0, 2**31 - 1)
        self.device = choice_box(DEVICES)
        self.run_button = QPushButton("Segment")
        self.run_button.clicked.connect(lambda: guarded(self.run))
        self.uncertainty = choice_box(UNCERTAINTY_CHOICES)
        self.uncertainty.currentIndexChanged.connect(self._show_uncertainty)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Segmenter", self.segmenter)
        form.addRow("Image", self.image)
        form.addRow("Use", self.which)
        form.addRow("Sampling steps", self.steps)
        form.addRow("Ensemble size", self.samples)
        form.addRow("Fusion", self.fusion)
        form.addRow("Seed", self.seed)
        form.addRow("Device", self.device)
        view = QFormLayout()
        view.addRow("Uncertainty map", self.uncertainty)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Segment with uncertainty</b>"))
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.status_label)
        layout.addLayout(view)
        layout.addStretch(1)

    def reset_choices(self, *_: Any) -> None:
        self.image.reset_choices()

    @property
    def uncertainty_kind(self) -> str:
        return UNCERTAINTY_CHOICES[self.uncertainty.currentText()]

    def run(self) -> Any:
        folder = str(self.segmenter.path("Segmenter", "a trained MedFlowSeg folder"))
        layer = self.image.layer("Image")
        index = current_index(self.viewer, layer) if WHICH[self.which.currentText()] and layer.ndim > 2 else None
        planes = image_slices(layer, index)
        names, images = [name for name, _ in planes], [image for _, image in planes]
        self.run_button.setEnabled(False)
        self.status_label.setText(f"Segmenting {len(images)} image{'s' if len(images) != 1 else ''} "
                                  f"({self.samples.value()} samples each)...")
        self.worker = start_worker(
            segment, folder, images, self.samples.value(), self.steps.value(), self.seed.value(),
            FUSIONS[self.fusion.currentText()], self.device.currentText(),
            on_done=lambda result: self._show(result, names), progress_desc="AlignFlow segmentation",
            on_error=lambda error: self.status_label.setText(f"Failed: {error}"),
            on_finished=lambda: self.run_button.setEnabled(True))
        return self.worker

    # ------------------------------------------------------------------ results as layers
    def _replace(self, name: str, add: Callable[..., Any], data: np.ndarray, **kwargs: Any) -> Any:
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        return add(data, name=name, **kwargs)

    def _stack(self, planes: list[np.ndarray]) -> np.ndarray:
        return planes[0] if len(planes) == 1 else pad_stack(planes)

    def _show(self, result: Any, names: list[str]) -> None:
        self.result, self.names = result, names
        sizes = [item.labels.shape for item in result.images]
        metadata = stack_metadata(names, sizes)
        # The samples [M, H, W] of each image, stacked as [M, N, H, W]: the leading axis is the sample, so the image
        # axis lines up with the segmented image stack (napari aligns layers by their trailing axes).
        samples = [item.samples for item in result.images]
        if len(samples) == 1:
            ensemble = samples[0]
        else:
            height, width = stack_shape(sizes)
            ensemble = np.stack([pad_to(s, (s.shape[0], height, width)) for s in samples], axis=1)
        self._replace(SAMPLES_LAYER, self.viewer.add_labels, ensemble, opacity=0.5, visible=False)
        self._replace(UNCERTAINTY_LAYER, self.viewer.add_image, self._uncertainty_planes(), colormap=UNCERTAINTY_COLORMAP,
                      blending="additive", metadata=dict(metadata))  # certain pixels (black) leave the scan as it is
        self._style_uncertainty()
        self._replace(LABELS_LAYER, self.viewer.add_labels, self._stack([item.labels for item in result.images]),
                      opacity=0.5, metadata=dict(metadata))
        self.status_label.setText(
            f"{len(result)} image{'s' if len(result) != 1 else ''} in {result.seconds:.0f} s "
            f"({result.num_samples} samples of {result.num_steps} steps, {result.fusion} fusion). Layers: "
            f"'{LABELS_LAYER}', '{UNCERTAINTY_LAYER}' and the samples in '{SAMPLES_LAYER}' (hidden; tick its eye).")
        show_info(f"AlignFlow: segmentation of {len(result)} image(s) added")

    def _uncertainty_planes(self) -> np.ndarray:
        return self._stack([item.uncertainty[self.uncertainty_kind] for item in self.result.images])

    def _style_uncertainty(self) -> None:
        from alignflow.segmentation.uncertainty import maximum_value

        layer = self.viewer.layers[UNCERTAINTY_LAYER]
        # A fixed scale, 0 to the kind's largest possible value, so maps of different images and runs compare.
        layer.contrast_limits_range = (0.0, maximum_value(self.uncertainty_kind, self.result.num_classes))
        layer.contrast_limits = layer.contrast_limits_range
        layer.metadata["uncertainty"] = self.uncertainty_kind
        layer.colorbar.visible = True

    def _show_uncertainty(self) -> None:
        """Another kind of map for the same result (no new sampling)."""
        if self.result is None or UNCERTAINTY_LAYER not in self.viewer.layers:
            return
        self.viewer.layers[UNCERTAINTY_LAYER].data = self._uncertainty_planes()
        self._style_uncertainty()
