"""Evaluate tab: does the augmentation help? Everything is computed by the engine on the accepted pairs of the Curate
tab:

- how close the generated images are to the target domain: KID (FID-Inception features) and the reward's MMD
  (EfficientNet-Lite0 features, what stage 2 minimises) to the references, beside the same distances of the real
  source images (the baseline to beat) -- ``alignflow.metrics.image_quality.evaluate_images``;
- with a few labelled target scans: the Dice of a small segmenter trained on the source pairs alone and on the source
  plus the accepted synthetic pairs, over a few paired seeds, and the gain with its standard error --
  ``alignflow.downstream.compare_with_synthetic``;
- per image, as sortable columns: mask fidelity (an evaluator's Dice to the mask), the distance to the nearest
  reference relative to the references' own spacing (about 1: as close to a reference as references are to each
  other), and with a MedFlowSeg its uncertainty score;
- with the report of an ``alignflow augment`` job, its comparison of the methods it ran.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from alignflow.data import cache_root, scan_dataset
from alignflow.errors import InputError

from ..session import Pair, session_for, write_accepted_pairs
from .common import DEVICES, PathField, choice_box, form, guarded, spin_box, start_worker
from .curation import show_pair

COLUMNS = ("pair", "fidelity", "distance to refs", "uncertainty")
DOWNSTREAM_SHARE = 0.25  # of every training batch from the accepted pairs, as the benchmarks' arms


def evaluation_folder() -> Path:
    return cache_root() / "plugin-evaluation" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


@dataclass
class Evaluation:
    report: dict[str, Any]  # evaluate_images' report
    stems: list[str]  # of the accepted pairs folder, in the order of ``pairs``
    pairs: list[Pair]
    fidelity: list[float | None]
    distance: list[float]
    uncertainty: list[float | None]
    folder: Path
    downstream: dict[str, Any] = field(default_factory=dict)

    def verdict(self) -> str:
        """The distances in words: closer to the target than the source images are, or not."""
        generated = self.report["generated_to_target"]
        lines = [f"KID to the references: {generated['kid']:.4f} +- {generated['kid_std']:.4f}; reward MMD "
                 f"{generated['mmd_reward']:.4f} ({len(self.stems)} accepted pairs)."]
        baseline = self.report.get("source_to_target")
        if baseline:
            change = (generated["kid"] - baseline["kid"]) / abs(baseline["kid"]) if baseline["kid"] else 0.0
            word = "closer to" if change < 0 else "further from"
            lines.append(f"Real source images: KID {baseline['kid']:.4f}, MMD {baseline['mmd_reward']:.4f}. The generated "
                         f"images are {abs(change) * 100:.0f} % {word} the target domain than the source images.")
        return "\n".join(lines)


def nearest_reference_distance(generated: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Each generated feature's distance to its nearest reference feature, over the median distance of a reference to
    its nearest other reference (so ~1 means "as close to a reference as the references are to each other")."""
    import torch

    gen, ref = torch.as_tensor(generated, dtype=torch.float64), torch.as_tensor(references, dtype=torch.float64)
    nearest = torch.cdist(gen, ref).min(dim=1).values
    among = torch.cdist(ref, ref) + torch.diag(torch.full((len(ref),), float("inf"), dtype=torch.float64))
    spacing = float(among.min(dim=1).values.median()) if len(ref) > 1 else 1.0
    return (nearest / max(spacing, 1e-12)).numpy()


def evaluate(pairs: list[Pair], references: str, source: str | None, evaluator: str | None, segmenter: str | None,
             size: int, device: str, emit: Callable[[Any], None]) -> Evaluation:
    """The image-level evaluation (off the UI thread); see the module doc."""
    from alignflow.device import resolve_device
    from alignflow.metrics.image_quality import evaluate_images, load_image_set, reward_features
    from alignflow.models.feature_encoders import DEFAULT_ENCODER, build_feature_encoder

    device = str(resolve_device(device))
    out = evaluation_folder()
    generated = write_accepted_pairs(pairs, out / "pairs")
    steps = ["features", "FID, KID, MMD", "t-SNE", "per image"]
    emit((0, len(steps) + 1))

    def stage(name: str) -> None:
        done = next((i for i, step in enumerate(steps) if name.startswith(step)), 0)
        emit((done + 1, len(steps) + 1))

    report = evaluate_images(generated, references, out / "report", source=source, size=size, device=device,
                             on_stage=stage, evaluator=evaluator)
    stems = [row["stem"] for row in json.loads((generated / "manifest.json").read_text())]
    encoder = build_feature_encoder(DEFAULT_ENCODER, device)
    generated_set = load_image_set(generated, "generated", size)
    reference_set = load_image_set(references, "references", size)
    by_stem = dict(zip(generated_set.stems, nearest_reference_distance(
        reward_features(generated_set.images, encoder, device).numpy(),
        reward_features(reference_set.images, encoder, device).numpy())))
    fidelity_rows = {row["stem"]: row["dice"] for row in (report.get("mask_fidelity") or {}).get("per_image", [])}
    fidelity = [fidelity_rows.get(stem, pair.fidelity) for stem, pair in zip(stems, pairs)]
    uncertainty: list[float | None] = [None] * len(stems)
    if segmenter:
        uncertainty = segmenter_uncertainty(segmenter, [pair.image for pair in pairs], device)
    emit((len(steps) + 1, len(steps) + 1))
    return Evaluation(report, stems, pairs, fidelity, [float(by_stem[stem]) for stem in stems], uncertainty, out)


def segmenter_uncertainty(segmenter: str, images: list[Path], device: str, samples: int = 4, steps: int = 10) -> list[float | None]:
    """A MedFlowSeg's per-image uncertainty score (entropy) on the generated images: a small ensemble, for ranking."""
    from alignflow.data import read_image
    from alignflow.segmentation.inference import load_segmenter, segment_images
    from alignflow.segmentation.uncertainty import image_score

    result = segment_images(load_segmenter(segmenter, device), [read_image(path) for path in images],
                            num_samples=samples, num_steps=steps, seed=0)
    return [image_score(item.uncertainty["entropy"], item.samples, "entropy", result.num_classes) for item in result.images]


def downstream_gain(pairs: list[Pair], source: str, labelled: str, steps: int, resolution: int, runs: int, device: str,
                    emit: Callable[[Any], None]) -> dict[str, Any]:
    """Dice on the labelled target scans of a small UNet trained on the source pairs, without and with the accepted
    synthetic pairs (a quarter of every batch), over ``runs`` paired seeds with the benchmarks' judge options: the
    engine's ``compare_with_synthetic``, whose block for the labelled set this returns (gain, its SE, both arms)."""
    from alignflow.downstream.compare import JUDGE_OPTIONS, compare_with_synthetic
    from alignflow.downstream.config import DownstreamConfig

    out = evaluation_folder()
    synthetic = write_accepted_pairs(pairs, out / "pairs")
    options = {**JUDGE_OPTIONS, "warmup_steps": min(JUDGE_OPTIONS["warmup_steps"], steps // 5)}
    config = DownstreamConfig(train=source, test={"target": labelled}, out=str(out / "comparison"), synthetic=str(synthetic),
                              synthetic_share=DOWNSTREAM_SHARE, steps=steps, resolution=resolution, device=device,
                              checkpoint_every=max(steps, 1), preview_every=max(steps, 1), log_every=max(1, steps // 20), **options)

    def listener(event: dict[str, Any]) -> None:
        if event.get("type") == "progress" and event.get("stage") != "test" and event.get("total"):
            emit((event["run"] * steps + int(event.get("step", 0)), event["runs"] * steps))

    comparison = compare_with_synthetic(config, runs, [listener])
    return {**comparison["test"]["target"], "runs": runs, "steps": steps, "folder": str(out)}


def augment_comparison(report_file: str | Path) -> str:
    """The method comparison of an ``alignflow augment`` report (report.json), one line per model or method."""
    path = Path(report_file)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise InputError(report_file, "an alignflow augment job folder or its report.json", "no such file")
    report = json.loads(path.read_text(encoding="utf-8"))
    lines = [f"{report_file}: KID to the {report.get('kid_target', 'target')} (lower is closer)"]
    for name, values in report.get("models", {}).items():
        line = f"  {name}: KID {values['kid']:.4f} +- {values['kid_std']:.4f} ({values.get('generated')} images)"
        fidelity = values.get("mask_fidelity") or {}
        if values.get("reward_mmd") is not None:
            line += f", reward MMD to the references {values['reward_mmd']:.4f}"
        if fidelity.get("dice") is not None:
            line += f", mask fidelity Dice {fidelity['dice']:.3f}"
        lines.append(line)
    for name, values in (report.get("downstream") or {}).items():
        if isinstance(values, dict) and values.get("dice") is not None:
            lines.append(f"  downstream {name}: Dice {values['dice']:.3f}")
    lines += report.get("advice", [])  # the engine's advice (alignflow.augment.advice), as the command line prints it
    return "\n".join(lines)


class _NumberItem(QTableWidgetItem):
    def __init__(self, value: float | None, digits: int = 3):
        super().__init__("" if value is None else f"{value:.{digits}f}")
        self.number = value

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine = self.number if self.number is not None else float("inf")
        theirs = getattr(other, "number", None)
        return mine < (theirs if theirs is not None else float("inf"))


class EvaluationWidget(QWidget):
    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.result: Evaluation | None = None
        self.downstream: dict[str, Any] | None = None
        self.worker: Any = None

        self.references = PathField("Target-domain images (the saved references, or more target scans)")
        self.source = PathField("Optional: the source dataset (the baseline)")
        self.evaluator = PathField("Optional: mask-fidelity evaluator (alignflow train-evaluator)")
        self.segmenter = PathField("Optional: a MedFlowSeg for per-image uncertainty")
        self.size = spin_box(32, 512, 128)
        self.device = choice_box(DEVICES)
        self.labelled = PathField("Optional: a few labelled target scans (images/ + masks/)")
        self.downstream_steps = spin_box(10, 100_000, 1000)  # the judge's steps on 100 polyp pairs (plateau by 400)
        self.downstream_resolution = spin_box(32, 512, 64)
        self.downstream_runs = spin_box(2, 20, 3)
        self.report = PathField("Optional: an alignflow augment job folder (its report.json)")
        self.evaluate_button = QPushButton("Evaluate the accepted pairs")
        self.evaluate_button.clicked.connect(lambda: guarded(self.evaluate))
        self.downstream_button = QPushButton("Dice with / without them")
        self.downstream_button.setToolTip("For every run, trains two small segmenters (source pairs; source + accepted pairs, "
                                          "a quarter of every batch) and scores both on the labelled target scans")
        self.downstream_button.clicked.connect(lambda: guarded(self.evaluate_downstream))
        self.report_button = QPushButton("Show augment comparison")
        self.report_button.clicked.connect(lambda: guarded(self.show_report))
        self.summary = QLabel("Generate and curate pairs, then evaluate them here.")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setSortingEnabled(True)
        self.table.setMinimumHeight(140)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._show_selected)

        images = form("evaluation", [("references", "Target images", self.references), ("source", "Source", self.source),
                                     ("evaluator", "Fidelity evaluator", self.evaluator),
                                     ("segmenter", "Segmenter", self.segmenter), ("size", "Image size", self.size),
                                     ("device", "Device", self.device)])
        downstream = form("evaluation", [("labelled", "Labelled target", self.labelled),
                                         ("downstream_steps", "Steps", self.downstream_steps),
                                         ("downstream_resolution", "Resolution", self.downstream_resolution),
                                         ("downstream_runs", "Runs", self.downstream_runs)])
        buttons = QHBoxLayout()
        buttons.addWidget(self.evaluate_button)
        buttons.addWidget(self.downstream_button)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Does it help?</b>"))
        layout.addLayout(images)
        layout.addLayout(downstream)
        layout.addLayout(buttons)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        report_row = QHBoxLayout()
        report_row.addWidget(self.report, 1)
        report_row.addWidget(self.report_button)
        layout.addLayout(report_row)
        self.session.changed.connect(self._session_changed)
        for what in ("source", "references"):
            self._session_changed(what)

    def _session_changed(self, what: str) -> None:
        state = self.session.state
        if what == "references" and state.references is not None and not self.references.text():
            self.references.setText(str(state.references))
        if what == "source" and state.source is not None and not self.source.text():
            self.source.setText(str(state.source))

    def _accepted(self) -> list[Pair]:
        pairs = self.session.accepted()
        if len(pairs) < 2:
            raise InputError("Evaluate", "at least 2 accepted generated pairs (KID and MMD compare distributions)",
                             str(len(pairs)))
        return pairs

    def evaluate(self) -> Any:
        pairs = self._accepted()
        references = str(self.references.path("Target images", "a folder of target-domain images"))
        self.evaluate_button.setEnabled(False)
        self.summary.setText(f"Evaluating {len(pairs)} accepted pairs against {references}...")
        self.worker = start_worker(
            evaluate, pairs, references, self.source.text() or None, self.evaluator.text() or None,
            self.segmenter.text() or None, self.size.value(), self.device.currentText(), on_done=self._show,
            progress_desc="AlignFlow evaluation", on_error=lambda error: self.summary.setText(f"Not evaluated: {error}"),
            on_finished=lambda: self.evaluate_button.setEnabled(True))
        return self.worker

    def evaluate_downstream(self) -> Any:
        pairs = self._accepted()
        source = self.source.path("Source", "the labelled source dataset the synthetic pairs augment")
        labelled = self.labelled.path("Labelled target", "a few labelled target scans (images/ + masks/)")
        for folder in (source, labelled):  # a wrong folder is named now, not minutes later from the worker
            scan_dataset(folder)
        self.downstream_button.setEnabled(False)
        runs = self.downstream_runs.value()
        self.summary.setText(f"Training {2 * runs} small segmenters ({runs} seeds, each without and with the accepted pairs)...")
        self.worker = start_worker(
            downstream_gain, pairs, str(source), str(labelled), self.downstream_steps.value(), self.downstream_resolution.value(),
            runs, self.device.currentText(), on_done=self._show_downstream, progress_desc="AlignFlow downstream Dice",
            on_error=lambda error: self.summary.setText(f"Not evaluated: {error}"),
            on_finished=lambda: self.downstream_button.setEnabled(True))
        return self.worker

    def show_report(self) -> str:
        text = augment_comparison(self.report.path("Augment report", "an alignflow augment job folder"))
        self.summary.setText(text)
        return text

    # ------------------------------------------------------------------ results
    def _show(self, result: Evaluation) -> None:
        self.result = result
        self.session.set("evaluation", evaluation=result.report)
        self._write_summary()
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(result.pairs))
        for row, (pair, fidelity, distance, uncertainty) in enumerate(zip(result.pairs, result.fidelity, result.distance,
                                                                           result.uncertainty)):
            name = QTableWidgetItem(pair.name)
            name.setData(Qt.ItemDataRole.UserRole, row)
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, _NumberItem(fidelity))
            self.table.setItem(row, 2, _NumberItem(distance, 2))
            self.table.setItem(row, 3, _NumberItem(uncertainty))
        self.table.setSortingEnabled(True)
        show_info("AlignFlow: evaluation done (Evaluate tab)")

    def _show_downstream(self, results: dict[str, Any]) -> None:
        self.downstream = results
        self._write_summary()

    def _write_summary(self) -> None:
        lines = [self.result.verdict()] if self.result is not None else []
        if self.downstream is not None:
            from alignflow.downstream.compare import describe_gain

            lines.append(describe_gain("Labelled target scans", self.downstream, self.downstream["runs"])
                         + f". {self.downstream['steps']} steps per run (the benchmarks' judge trained 1000 on 100 polyp pairs; more "
                         "pairs may need more).")
        self.summary.setText("\n".join(lines))

    def _show_selected(self) -> None:
        rows = self.table.selectedIndexes()
        if rows and self.result is not None:
            index = int(self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole))
            guarded(lambda: show_pair(self.viewer, self.result.pairs[index]))
