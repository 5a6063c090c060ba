"""Generation panel: images from a trained generator for the masks of a Labels layer (source masks, synthetic masks
from the Synthetic masks panel, or masks drawn by hand), shown as a stack with their masks on top and, in grid
mode, beside the references.

Every generation is also written as a folder of generated pairs (``images/``, ``masks/``, ``manifest.json`` with each
image's seed and generator, exactly what ``alignflow generate`` writes) and joins the Curate tab's list, so every
generation, not only the last, can be curated and exported. Empty masks are refused: an image generated for a mask
without foreground teaches a segmenter only background.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QLabel, QPushButton, QSlider, QVBoxLayout, QWidget

from alignflow.data import cache_root
from alignflow.errors import InputError

from ..arrays import pad_stack, stack_metadata
from ..session import session_for
from .common import (
    DEVICES,
    LayerChoice,
    PathField,
    choice_box,
    current_index,
    form,
    grid_of,
    guarded,
    layer_planes,
    spin_box,
    start_worker,
)
from .references import LAYER as REFERENCES_LAYER

IMAGES_LAYER = "AlignFlow generated images"
MASKS_LAYER = "AlignFlow generated masks"
PAIRS_KEY = "alignflow_pairs"  # layer metadata: the folder of generated pairs behind the layer
CONTOUR_PX = 2
WHICH = {"all masks of the layer": False, "only the mask shown": True}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def generated_folder() -> Path:
    """A new folder for one generation's pairs (the plugin's cache; the Export panel writes them elsewhere)."""
    return cache_root() / "plugin-generated" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


@dataclass
class GeneratedPairs:
    stems: list[str]
    images: list[np.ndarray]  # uint8 H x W x 3, each at its mask's size
    masks: list[np.ndarray]  # uint8 class ids
    folder: Path  # the generated pairs as files (images/, masks/, manifest.json)
    seconds: float


def class_ids(mask: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """A mask as uint8 class ids the generator knows, or an InputError naming the mask."""
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
        raise InputError(where, "a mask of integer class ids", str(mask.dtype))
    low, high = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    if low < 0 or high >= num_classes:
        raise InputError(where, f"class ids 0..{num_classes - 1} (the generator has {num_classes} classes)",
                         f"ids {low}..{high}")
    return mask.astype(np.uint8)


def without_empty_masks(stems: list[str], masks: list[np.ndarray]) -> tuple[list[str], list[np.ndarray], list[str]]:
    """The masks with foreground, and the names of those without (refused: nothing to segment in them)."""
    kept = [(stem, mask) for stem, mask in zip(stems, masks) if np.any(mask)]
    empty = [stem for stem, mask in zip(stems, masks) if not np.any(mask)]
    if not kept:
        raise InputError("Masks", "masks with foreground (label 1 or more); an image for an empty mask teaches only "
                         "background", f"{len(empty)} empty mask{'s' if len(empty) != 1 else ''}")
    return [stem for stem, _ in kept], [mask for _, mask in kept], empty


def generate_pairs(folder: str, stems: list[str], masks: list[np.ndarray], steps: int, guidance: float, seed: int,
                   device: str, out: Path, emit: Callable[[Any], None], evaluator: str | None = None,
                   candidates: int = 1) -> GeneratedPairs:
    """Images for ``masks`` (off the UI thread); image i is seeded with ``seed + i``. Writes ``out/pairs``. With an
    ``evaluator`` (a mask-fidelity segmenter) each image is scored, and the best of ``candidates`` is kept."""
    from alignflow.data import resize_to, to_uint8, write_mask
    from alignflow.device import resolve_device
    from alignflow.generator import pairs
    from alignflow.generator.sampling import load_generator

    started = time.perf_counter()
    generator = load_generator(folder, resolve_device(device))
    scorer = None
    if evaluator:
        from alignflow.fidelity.segmenter import load_segmenter

        scorer = load_segmenter(evaluator, resolve_device(device))
    config = generator.config
    masks = [class_ids(mask, config.num_classes, f"mask {stem!r}") for stem, mask in zip(stems, masks)]
    # The masks as used, beside the pairs: each manifest row names its source mask file.
    mask_files = [out / "source_masks" / f"{stem}.png" for stem in stems]
    for file, mask in zip(mask_files, masks):
        write_mask(file, mask, binary_as_255=int(mask.max()) <= 1)
    emit((0, len(masks)))
    written = pairs.generate_pairs(generator, mask_files, out / "pairs", stems=stems, seed=seed, num_steps=steps,
                                   guidance_scale=guidance, evaluator=scorer, candidates=candidates if scorer else 1,
                                   on_progress=lambda _, done, total: emit((done, total)))
    images = written.images
    pictures = [resize_to(to_uint8(image), mask.shape, kind="image") for image, mask in zip(images, masks)]
    return GeneratedPairs(stems, pictures, masks, written.folder, time.perf_counter() - started)


def safe_stems(names: list[str]) -> list[str]:
    """File-name-safe, unique stems for the masks' names (file names lose their image suffix; layer slices without
    file names are named like ``layer [3]``)."""
    from alignflow.data import IMAGE_SUFFIXES

    stems: list[str] = []
    for name in names:
        name = Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else name
        stem = _UNSAFE.sub("_", name).strip("_") or "mask"
        stems.append(stem if stem not in stems else f"{stem}_{len(stems)}")
    return stems


class GenerationWidget(QWidget):
    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.worker: Any = None
        self.result: GeneratedPairs | None = None
        self._hidden_by_grid: list[Any] = []

        self.generator = PathField("Trained image generator (a training run folder or its generator/ folder)")
        self.masks = LayerChoice(napari_viewer, Labels,
                                 what="a Labels layer of masks (open a dataset folder, generate or draw masks)")
        self.which = choice_box(WHICH)
        self.steps = spin_box(1, 500, 28)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 20.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setValue(2.0)
        self.seed = spin_box(0, 2**31 - 1)
        self.device = choice_box(DEVICES)
        self.evaluator = PathField("Optional: mask-fidelity evaluator (alignflow train-evaluator run folder)")
        self.candidates = spin_box(1, 16, 1)
        self.generate_button = QPushButton("Generate images")
        self.generate_button.clicked.connect(lambda: guarded(self.generate))

        self.session.changed.connect(self._session_changed)

        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.valueChanged.connect(self._style_masks)
        self.contour = QCheckBox("outlines only")
        self.contour.toggled.connect(self._style_masks)
        self.references = LayerChoice(napari_viewer, Image, accept=lambda layer: layer.name != IMAGES_LAYER,
                                      prefer=REFERENCES_LAYER, optional="(none)")
        self.grid = QCheckBox("grid with references")
        self.grid.setToolTip("The generated images with their masks in one cell, the references layer beside them")
        self.grid.toggled.connect(lambda on: guarded(lambda: self.show_grid(on)))
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)

        settings = form("generation", [
            ("generator", "Generator", self.generator), ("masks", "Masks", self.masks), ("which", "Use", self.which),
            ("steps", "Sampling steps", self.steps), ("guidance", "Guidance", self.guidance),
            ("seed", "First seed", self.seed), ("device", "Device", self.device),
            ("evaluator", "Fidelity evaluator", self.evaluator), ("candidates", "Best of", self.candidates),
        ])
        view = form("generation", [])
        view.addRow("Mask opacity", self.opacity)
        view.addRow(self.contour)
        view.addRow("References", self.references)
        view.addRow(self.grid)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Generate images from masks</b>"))
        layout.addLayout(settings)
        layout.addWidget(self.generate_button)
        layout.addWidget(self.status_label)
        layout.addWidget(QLabel("<b>View</b>"))
        layout.addLayout(view)
        layout.addStretch(1)

    def reset_choices(self, *_: Any) -> None:
        self.masks.reset_choices()
        self.references.reset_choices()

    # ------------------------------------------------------------------ generation
    def chosen_masks(self, limit: int | None = None) -> tuple[list[str], list[np.ndarray]]:
        """The masks of the chosen Labels layer (a 2-D layer is one mask, a stack many; the first ``limit``) and their
        stems."""
        layer = self.masks.layer("Masks")
        index = current_index(self.viewer, layer) if WHICH[self.which.currentText()] and layer.ndim > 2 else None
        planes = layer_planes(layer, 2, index, limit)
        return safe_stems([name for name, _ in planes]), [mask for _, mask in planes]

    def _session_changed(self, what: str) -> None:
        if what == "training" and self.session.generator is not None:
            self.generator.setText(str(self.session.generator))  # the newest trained generator (aligned first)

    def generate(self, first: int | None = None) -> Any:
        """Images for the chosen masks (only the ``first`` N with foreground, for a preview) in a worker; returns it."""
        folder = str(self.generator.path("Generator", "a trained image generator folder"))
        # A preview reads only the first masks of a (lazy) dataset layer; some may be empty, hence a margin.
        stems, masks = self.chosen_masks(None if first is None else 4 * first)
        stems, masks, empty = without_empty_masks(stems, masks)
        if first is not None:
            stems, masks = stems[:first], masks[:first]
        if empty:
            show_warning(f"AlignFlow: {len(empty)} empty mask{'s' if len(empty) != 1 else ''} skipped (nothing to "
                         f"segment in them): {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}")
        evaluator = self.evaluator.text() or None
        self.generate_button.setEnabled(False)
        self.status_label.setText(f"Generating {len(masks)} image{'s' if len(masks) != 1 else ''}...")
        self.worker = start_worker(
            generate_pairs, folder, stems, masks, self.steps.value(), self.guidance.value(), self.seed.value(),
            self.device.currentText(), generated_folder(), evaluator=evaluator, candidates=self.candidates.value(),
            on_done=self._show, progress_desc="AlignFlow generation",
            on_error=lambda error: self.status_label.setText(f"Failed: {error}"),
            on_finished=lambda: self.generate_button.setEnabled(True))
        return self.worker

    def _show(self, result: GeneratedPairs) -> None:
        self.result = result
        self.session.add_pairs(result.folder)
        if self.grid.isChecked():
            self.grid.setChecked(False)  # the grid is rebuilt around the new layers
        for name in (IMAGES_LAYER, MASKS_LAYER):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        metadata = stack_metadata(result.stems, [m.shape for m in result.masks], **{PAIRS_KEY: str(result.folder)})
        single = len(result.images) == 1
        images = result.images[0] if single else pad_stack(result.images)
        masks = result.masks[0] if single else pad_stack(result.masks)
        self.viewer.add_image(images, name=IMAGES_LAYER, rgb=True, metadata=dict(metadata))
        labels = self.viewer.add_labels(masks, name=MASKS_LAYER, metadata=dict(metadata))
        self._style_masks()
        if not single:  # the first new image: the slider may stand beyond this stack's end (a longer stack was open)
            self.viewer.dims.set_current_step(self.viewer.dims.ndim - labels.ndim, 0)
        self.viewer.reset_view()
        self.status_label.setText(f"{len(result.images)} image{'s' if not single else ''} in {result.seconds:.0f} s "
                                  f"(seeds {self.seed.value()}..{self.seed.value() + len(result.images) - 1}). "
                                  f"They join the Curate tab (generation {self.session.state.batches}); "
                                  f"files in {result.folder}.")
        show_info(f"AlignFlow: {len(result.images)} generated image(s) added as '{IMAGES_LAYER}'")

    # ------------------------------------------------------------------ view
    def _style_masks(self) -> None:
        if MASKS_LAYER in self.viewer.layers:
            layer = self.viewer.layers[MASKS_LAYER]
            layer.opacity = self.opacity.value() / 100
            layer.contour = CONTOUR_PX if self.contour.isChecked() else 0

    def show_grid(self, enabled: bool) -> None:
        """Grid on: the generated images with their masks in one cell, the references layer in the next, every other
        layer hidden (napari's grid puts ``stride`` = 2 consecutive layers per cell). Grid off: the layers as before."""
        layers, grid = self.viewer.layers, grid_of(self.viewer)
        if not enabled:
            grid.enabled = False
            grid.stride = 1
            for layer in self._hidden_by_grid:
                if layer in layers:
                    layer.visible = True
            self._hidden_by_grid = []
            for name in (IMAGES_LAYER, MASKS_LAYER):  # back on top, masks over images
                if name in layers:
                    layers.move(layers.index(name), len(layers))
            return
        if IMAGES_LAYER not in layers or MASKS_LAYER not in layers:
            self.grid.blockSignals(True)
            self.grid.setChecked(False)
            self.grid.blockSignals(False)
            raise InputError("grid with references", "generated images to show (press Generate images first)", "none")
        shown = [layers[IMAGES_LAYER], layers[MASKS_LAYER]]
        reference = self.references.layer("References")
        if reference is not None:
            shown.append(reference)
        for position, layer in enumerate(shown):  # cells are pairs of consecutive layers from the bottom
            layers.move(layers.index(layer), position)
        self._hidden_by_grid = [layer for layer in layers if layer not in shown and layer.visible]
        for layer in self._hidden_by_grid:
            layer.visible = False
        for layer in shown:
            layer.visible = True
        grid.stride = 2
        grid.enabled = True
        self.viewer.reset_view()

