"""Segmentation panel: a trained MedFlowSeg on an image layer. Adds the STAPLE-fused labels, a per-pixel uncertainty
map (colormap + colorbar) and the ensemble's individual samples as layers (docs/segmentation.md), ranks the images by
a per-image uncertainty score (the cases to review first), and saves the results as files (labels, uncertainty maps,
samples, scores) or as a dataset folder (the images with the fused labels as masks/, ready to correct and train on).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from alignflow.errors import InputError

from ..arrays import pad_stack, pad_to, stack_metadata, stack_shape
from .common import (
    DEVICES,
    LayerChoice,
    PathField,
    choice_box,
    current_index,
    form,
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


SCORES_FILE = "uncertainty_scores.json"


def uncertainty_scores(result: Any, kind: str) -> list[float]:
    """Each image's uncertainty score in [0, 1] for the map ``kind`` (alignflow.segmentation.uncertainty.image_score)."""
    from alignflow.segmentation.uncertainty import image_score

    return [image_score(item.uncertainty[kind], item.samples, kind, result.num_classes) for item in result.images]


def save_results(out: Path, names: list[str], images: list[np.ndarray], result: Any, kind: str, as_dataset: bool) -> Path:
    """The result as files (off the UI thread): the engine's layout (labels/, uncertainty/, posterior/, samples/,
    manifest.json) plus the per-image scores; or, ``as_dataset``, a dataset folder: the images and their fused labels
    as masks/ (to correct in napari and train on), the scores beside them."""
    from alignflow.atomic import atomic_directory, atomic_write_json
    from alignflow.data import write_image, write_mask
    from alignflow.segmentation.inference import write_segmentations

    from .generation import safe_stems

    stems = safe_stems(names)
    scores = [{"stem": stem, "name": name, "uncertainty_score": score, "uncertainty": kind}
              for stem, name, score in zip(stems, names, uncertainty_scores(result, kind))]
    with atomic_directory(out) as tmp:
        if as_dataset:
            for stem, image, item in zip(stems, images, result.images):
                write_image(tmp / "images" / f"{stem}.png", image)
                write_mask(tmp / "masks" / f"{stem}.png", item.labels, binary_as_255=result.num_classes <= 2)
        else:
            write_segmentations(tmp, stems, result)
        atomic_write_json(tmp / SCORES_FILE, sorted(scores, key=lambda row: -row["uncertainty_score"]))
    return out


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
        self.images: list[np.ndarray] = []
        self.steps = spin_box(1, 500, 50)
        self.samples = spin_box(1, 64, 10)
        self.fusion = choice_box(FUSIONS)
        self.seed = spin_box(0, 2**31 - 1)
        self.device = choice_box(DEVICES)
        self.run_button = QPushButton("Segment")
        self.run_button.clicked.connect(lambda: guarded(self.run))
        self.uncertainty = choice_box(UNCERTAINTY_CHOICES)
        self.uncertainty.currentIndexChanged.connect(self._show_uncertainty)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.ranking = QTableWidget(0, 2)
        self.ranking.setHorizontalHeaderLabels(("image", "uncertainty"))
        self.ranking.setToolTip("The images by their uncertainty score (mean of the map over the region some sample "
                                "labels foreground, 0..1): review the top ones first. Click a row to show it.")
        self.ranking.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.ranking.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.ranking.verticalHeader().setVisible(False)
        self.ranking.horizontalHeader().setStretchLastSection(True)
        self.ranking.setMinimumHeight(120)
        self.ranking.itemSelectionChanged.connect(self._show_ranked)
        save_files = QPushButton("Save results...")
        save_files.setToolTip("Labels, uncertainty maps (TIFF + PNG), STAPLE posterior, samples, manifest and the "
                              f"per-image scores ({SCORES_FILE}) into a new folder")
        save_files.clicked.connect(lambda: self._choose_save_folder(as_dataset=False))
        save_dataset = QPushButton("Save as dataset...")
        save_dataset.setToolTip("The images with the fused labels as masks/: a dataset folder to correct and train on")
        save_dataset.clicked.connect(lambda: self._choose_save_folder(as_dataset=True))
        self.saved: Path | None = None

        settings = form("segmentation", [
            ("segmenter", "Segmenter", self.segmenter), ("image", "Image", self.image), ("which", "Use", self.which),
            ("steps", "Sampling steps", self.steps), ("samples", "Ensemble size", self.samples),
            ("fusion", "Fusion", self.fusion), ("seed", "Seed", self.seed), ("device", "Device", self.device),
        ])
        view = form("segmentation", [("uncertainty", "Uncertainty map", self.uncertainty)])
        saving = QHBoxLayout()
        saving.addWidget(save_files)
        saving.addWidget(save_dataset)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Segment with uncertainty</b>"))
        layout.addLayout(settings)
        layout.addWidget(self.run_button)
        layout.addWidget(self.status_label)
        layout.addLayout(view)
        layout.addWidget(QLabel("Review first (most uncertain on top):"))
        layout.addWidget(self.ranking, 1)
        layout.addLayout(saving)

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
            on_done=lambda result: self._show(result, names, images), progress_desc="AlignFlow segmentation",
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

    def _show(self, result: Any, names: list[str], images: list[np.ndarray]) -> None:
        self.result, self.names, self.images = result, names, images
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
        self._rank()
        show_info(f"AlignFlow: segmentation of {len(result)} image(s) added")

    # ------------------------------------------------------------------ ranking and saving
    def scores(self) -> list[float]:
        return uncertainty_scores(self.result, self.uncertainty_kind)

    def _rank(self) -> None:
        """The images by their score for the map shown, most uncertain first."""
        scores = self.scores()
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        self.ranking.blockSignals(True)
        self.ranking.setRowCount(len(order))
        for row, index in enumerate(order):
            for column, text in enumerate((self.names[index], f"{scores[index]:.3f}")):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, index)
                self.ranking.setItem(row, column, item)
        self.ranking.blockSignals(False)

    def ranked_names(self) -> list[str]:
        return [self.ranking.item(row, 0).text() for row in range(self.ranking.rowCount())]

    def _show_ranked(self) -> None:
        """The chosen image on the slider (a stack's first axis)."""
        rows = self.ranking.selectedIndexes()
        if not rows or len(self.names) < 2 or LABELS_LAYER not in self.viewer.layers:
            return
        index = int(self.ranking.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole))
        layer = self.viewer.layers[LABELS_LAYER]
        axis = self.viewer.dims.ndim - layer.ndim
        self.viewer.dims.set_current_step(axis, index)

    def save(self, folder: str | Path, as_dataset: bool = False) -> Any:
        """Save the last result into ``folder`` (a new folder) in a worker; returns the worker."""
        if self.result is None:
            raise InputError("Save", "a segmentation to save (press Segment first)", "none")
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()):
            raise InputError(folder, "a new (empty) folder for the results", "a folder that holds files")
        self.status_label.setText(f"Saving to {folder}...")
        return start_worker(save_results, folder, self.names, self.images, self.result, self.uncertainty_kind, as_dataset,
                            on_done=self._saved)

    def _saved(self, folder: Path) -> None:
        self.saved = folder
        scores = json.loads((folder / SCORES_FILE).read_text())
        message = f"Saved to {folder} (per-image uncertainty in {SCORES_FILE}; most uncertain: {scores[0]['name']})"
        self.status_label.setText(message)
        show_info(f"AlignFlow: {message}")

    def _choose_save_folder(self, as_dataset: bool) -> None:
        folder = QFileDialog.getSaveFileName(self, "New folder for the segmentation results")[0]
        if folder:
            guarded(lambda: self.save(folder, as_dataset))

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
        self._rank()
