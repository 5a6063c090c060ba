"""The guided flow on top of the AlignFlow dock: "Augment for this scanner", one step after another.

Job folder, source dataset, target scans, references (the advisor picks them), train and align (stage 1 then stage 2
in one go), preview images, curate, evaluate, export. Each step's button is enabled once the steps it needs are done;
each drives the tab that does the work (and shows it), so every setting stays reachable there for experts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import napari
from napari.layers import Image
from qtpy.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from alignflow.data import scan_dataset
from alignflow.errors import InputError

from ..readers.dataset_folder import dataset_layers
from ..session import session_for
from ..tooltips import tooltip
from .common import LayerChoice, PathField, guarded, spin_box

DONE, NEXT, LATER = "\u2713", "\u2192", "\u00b7"  # check mark, arrow, dot


@dataclass
class Step:
    title: str
    button: QPushButton
    detail: QLabel
    mark: QLabel
    done: Callable[[], bool]


class GuideWidget(QWidget):
    """Needs the dock's panels (``panels``: name -> widget) and a way to show a tab (``show_tab(name)``)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, panels: dict[str, Any], show_tab: Callable[[str], None],
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.panels = panels
        self.show_tab = show_tab
        self.source_layers: list[Any] = []
        self.reference_worker: Any = None

        self.work = PathField("Job folder (references, training runs, results)")
        self.work.setToolTip(tooltip("guide.work"))
        self.source = PathField("Source dataset (images/ + masks/)")
        self.source.setToolTip(tooltip("guide.source"))
        self.target = LayerChoice(napari_viewer, Image, accept=self._is_target_candidate,
                                  what="an image layer of target scans (drop a folder of scans on napari)")
        self.target.setToolTip(tooltip("guide.target"))
        self.k = spin_box(2, 100, 10)
        self.k.setToolTip(tooltip("guide.references"))
        self.steps1 = spin_box(1, 1_000_000, 1000)
        self.steps1.setToolTip(tooltip("guide.steps1"))
        self.steps2 = spin_box(1, 1_000_000, 200)
        self.steps2.setToolTip(tooltip("guide.steps2"))
        self.preview = spin_box(1, 10_000, 8)
        self.preview.setToolTip(tooltip("guide.preview"))

        grid = QGridLayout()
        grid.setColumnStretch(1, 1)
        self.steps: dict[str, Step] = {}
        rows: list[tuple[str, str, list[QWidget], str, Callable[[], Any], Callable[[], bool]]] = [
            ("source", "1. Source dataset", [self.work, self.source], "Open", self.open_source,
             lambda: self.session.state.source is not None),
            ("target", "2. Target scans", [self.target], "Use these scans", self.use_target, self._target_chosen),
            ("references", "3. References", [_row("how many", self.k)], "Suggest references", self.suggest_references,
             lambda: self.session.state.references is not None),
            ("train", "4. Train and align", [_row("stage 1 steps", self.steps1), _row("stage 2 steps", self.steps2)],
             "Train and align", self.train_and_align, lambda: self.session.state.stage2 is not None),
            ("preview", "5. Preview", [_row("images", self.preview)], "Generate previews", self.generate_previews,
             lambda: bool(self.session.state.pairs)),
            ("curate", "6. Curate", [], "Open Curate", lambda: self.show_tab("Curate"),
             lambda: bool(self.session.accepted())),
            ("evaluate", "7. Evaluate", [], "Open Evaluate", lambda: self.show_tab("Evaluate"),
             lambda: self.session.state.evaluation is not None),
            ("export", "8. Export", [], "Open Export", lambda: self.show_tab("Export"),
             lambda: self.session.state.exported is not None),
        ]
        row = 0
        for key, title, fields, text, action, done in rows:
            mark, heading, detail = QLabel(LATER), QLabel(f"<b>{title}</b>"), QLabel()
            detail.setWordWrap(True)
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, act=action: guarded(act))
            grid.addWidget(mark, row, 0)
            grid.addWidget(heading, row, 1)
            grid.addWidget(button, row, 2)
            row += 1
            for field in fields:
                grid.addWidget(field, row, 1, 1, 2)
                row += 1
            grid.addWidget(detail, row, 1, 1, 2)
            row += 1
            self.steps[key] = Step(title, button, detail, mark, done)
        heading = QLabel("<b>Augment for this scanner</b>: each step unlocks the next; the tabs hold every setting.")
        heading.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addLayout(grid)
        layout.addStretch(1)
        self.session.changed.connect(lambda _: self.refresh())
        self.target.currentIndexChanged.connect(lambda _: self.refresh())
        self.refresh()

    def reset_choices(self, *_: Any) -> None:
        self.target.reset_choices()
        self.refresh()

    # ------------------------------------------------------------------ state
    def _is_target_candidate(self, layer: Any) -> bool:
        return layer not in self.source_layers and not layer.name.startswith("AlignFlow")

    def _target_chosen(self) -> bool:
        return bool(self.target.currentText())

    def refresh(self) -> None:
        """Marks and buttons: a step is enabled when every step before it is done (evaluate is optional)."""
        ready = True
        for key, step in self.steps.items():
            done = step.done()
            step.button.setEnabled(ready)
            step.mark.setText(DONE if done else (NEXT if ready else LATER))
            if key != "evaluate":
                ready = ready and done
        state = self.session.state
        self.steps["source"].detail.setText(f"{state.source}" if state.source else "A folder with images/ and masks/.")
        self.steps["target"].detail.setText("Drop a folder of target scans on napari, then choose its layer."
                                            if not self._target_chosen() else f"Target scans: {self.target.currentText()}")
        self.steps["references"].detail.setText(f"Saved in {state.references}" if state.references else
                                                "The advisor picks the most representative target scans.")
        self.steps["train"].detail.setText(f"Aligned generator: {state.stage2}" if state.stage2 else
                                           f"Stage 1 done: {state.stage1}" if state.stage1 else
                                           "Stage 1 on the source, then stage 2 on the references (Training tab).")
        self.steps["preview"].detail.setText(f"{len(state.pairs)} pairs generated" if state.pairs else
                                             "Images for the first source masks, to look at before curating.")
        self.steps["curate"].detail.setText(f"{len(self.session.accepted())} of {len(state.pairs)} accepted"
                                            if state.pairs else "Accept or reject each pair (keys A and R).")
        self.steps["evaluate"].detail.setText("Optional: KID to the references; Dice with and without the pairs.")
        self.steps["export"].detail.setText(f"Exported to {state.exported}" if state.exported else
                                            "The accepted pairs with the source pairs, for nnU-Net or as folders.")

    def work_folder(self) -> Path:
        folder = self.work.path("Job folder", "a folder for this job's references, runs and results")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # ------------------------------------------------------------------ the steps
    def open_source(self) -> None:
        """Check the dataset folder, open it as layers and hand it to every tab."""
        self.work_folder()
        folder = self.source.path("Source dataset", "a dataset folder with images/ and masks/")
        scan_dataset(folder, check_masks=False)  # an InputError names what is wrong with it
        self.source_layers = [getattr(self.viewer, f"add_{kind}")(data, **kwargs)
                              for data, kwargs, kind in dataset_layers(folder)]
        self.target.reset_choices()
        self.panels["Train"].source.setText(str(folder))
        self.session.set("source", source=folder)

    def use_target(self) -> None:
        self.target.layer("Target scans")  # an InputError when none is open
        self.refresh()

    def suggest_references(self) -> Any:
        """The advisor on the target scans; its picks are saved into the job folder for stage 2."""
        layer = self.target.layer("Target scans")
        references = self.panels["References"]
        references.k_spin.setValue(self.k.value())
        folder = self.work_folder() / "references"
        if folder.exists() and any(folder.iterdir()):
            raise InputError(folder, "a job folder without references yet (choose a new job folder)", "references already")
        self.show_tab("References")
        self.reference_worker = references.suggest([layer], then=lambda: references.save_references(folder))
        return self.reference_worker

    def train_and_align(self) -> Any:
        work, state = self.work_folder(), self.session.state
        training = self.panels["Train"]
        for stage in ("stage1", "stage2"):
            if (work / stage).exists() and any((work / stage).iterdir()):
                raise InputError(work / stage, "a job folder without training runs yet (choose a new job folder)",
                                 "a run already")
        training.steps.setValue(self.steps1.value())
        self.show_tab("Train")
        return training.start_chain(work / "stage1", work / "stage2", state.references, self.steps2.value())

    def generate_previews(self) -> Any:
        generation = self.panels["Generate"]
        generation.generator.setText(str(self.session.generator))
        masks = next((layer for layer in self.source_layers if layer.name.endswith(" masks")), None)
        if masks is None or masks not in self.viewer.layers:
            raise InputError("Preview", "the source dataset's masks layer (step 1)", "none open")
        generation.reset_choices()
        generation.masks.setCurrentText(masks.name)
        self.show_tab("Generate")
        return generation.generate(first=self.preview.value())


def _row(label: str, widget: QWidget) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(QLabel(label))
    layout.addWidget(widget, 1)
    return row
