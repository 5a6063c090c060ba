"""What the panels of one viewer share: the source dataset, the references, the trained generators, every generated
pair with its curation decision, the last export. The guided flow reads it to enable its next step; the Curate,
Evaluate and Export tabs read the generated pairs from it, so every generation (not only the last) can be exported.

No Qt widgets here; a Qt signal says what changed.
"""

from __future__ import annotations

import json
import shutil
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, Signal

from alignflow.atomic import atomic_directory, atomic_write_json
from alignflow.data import read_mask
from alignflow.errors import InputError

ACCEPTED, REJECTED = "accepted", "rejected"
MANIFEST = "manifest.json"  # the pairs folders' manifest (alignflow.generator.pairs.MANIFEST_FILE)


@dataclass
class Pair:
    """One generated pair as the curation table shows it; its files stay in the generation's pairs folder."""

    folder: Path  # the generation's pairs folder (images/, masks/, manifest.json)
    stem: str
    row: dict[str, Any]  # its manifest row (seed, source mask, generator, fidelity scores ...)
    mask_fraction: float  # foreground share of the mask; 0 = an empty mask
    batch: int  # which generation (1, 2, ...) it came from
    decision: str = ACCEPTED

    @property
    def image(self) -> Path:
        return self.folder / "images" / f"{self.stem}.png"

    @property
    def mask(self) -> Path:
        return self.folder / "masks" / f"{self.stem}.png"

    @property
    def seed(self) -> int | None:
        return self.row.get("seed")

    @property
    def fidelity(self) -> float | None:
        """Dice of an evaluator's segmentation to the mask, when an evaluator scored the generation."""
        value = self.row.get("dice", self.row.get("fidelity_dice"))
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def empty(self) -> bool:
        return self.mask_fraction == 0.0

    @property
    def name(self) -> str:
        return f"{self.batch}:{self.stem}"


def read_pairs_folder(folder: str | Path, batch: int) -> list[Pair]:
    """The pairs of a folder written by ``generate_pairs`` (the Generate tab, ``alignflow generate``); a pair with an
    empty mask starts rejected (nothing to segment: it teaches only background)."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise InputError(folder, "a folder of generated pairs (images/, masks/, manifest.json)", "no manifest.json")
    pairs = []
    for row in json.loads(manifest.read_text(encoding="utf-8")):
        mask = read_mask(folder / "masks" / f"{row['stem']}.png")
        fraction = float(np.count_nonzero(mask)) / mask.size if mask.size else 0.0
        pairs.append(Pair(folder, row["stem"], row, fraction, batch, REJECTED if fraction == 0.0 else ACCEPTED))
    return pairs


def write_accepted_pairs(pairs: list[Pair], out: Path) -> Path:
    """The accepted pairs as one pairs folder (the layout ``export_dataset`` and ``evaluate_images`` read): files
    copied, manifest rows kept; a stem used by two generations is prefixed with its generation's number."""
    accepted = [pair for pair in pairs if pair.decision == ACCEPTED]
    if not accepted:
        raise InputError("Curate", "at least one accepted generated pair (generate images, then accept them)", "none")
    counts: dict[str, int] = {}
    for pair in accepted:
        counts[pair.stem] = counts.get(pair.stem, 0) + 1
    rows = []
    with atomic_directory(out) as tmp:
        (tmp / "images").mkdir(parents=True)
        (tmp / "masks").mkdir()
        for pair in accepted:
            stem = pair.stem if counts[pair.stem] == 1 else f"g{pair.batch}_{pair.stem}"
            shutil.copyfile(pair.image, tmp / "images" / f"{stem}.png")
            shutil.copyfile(pair.mask, tmp / "masks" / f"{stem}.png")
            rows.append({**pair.row, "stem": stem})
        atomic_write_json(tmp / MANIFEST, rows)
    return out


@dataclass
class SessionState:
    source: Path | None = None  # the labelled source dataset folder
    references: Path | None = None  # the folder of saved references (stage 2 reads it)
    stage1: Path | None = None  # run folders of finished trainings on this computer
    stage2: Path | None = None
    pairs: list[Pair] = field(default_factory=list)
    batches: int = 0
    exported: Path | None = None
    evaluation: dict[str, Any] | None = None


class Session(QObject):
    """The shared state of the AlignFlow panels of one viewer; ``changed`` carries the name of what changed
    ("source", "references", "training", "pairs", "export", "evaluation")."""

    changed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.state = SessionState()

    def set(self, what: str, **values: Any) -> None:
        for key, value in values.items():
            setattr(self.state, key, value)
        self.changed.emit(what)

    @property
    def generator(self) -> Path | None:
        """The generator to use next: the aligned one if there is one, else stage 1's."""
        return self.state.stage2 or self.state.stage1

    def add_pairs(self, folder: str | Path) -> list[Pair]:
        """A generation's pairs folder joins the curation list (as generation number N + 1)."""
        batch = self.state.batches + 1
        added = read_pairs_folder(folder, batch)
        self.state.batches = batch
        self.state.pairs.extend(added)
        self.changed.emit("pairs")
        return added

    def accepted(self) -> list[Pair]:
        return [pair for pair in self.state.pairs if pair.decision == ACCEPTED]

    def decide(self, pairs: list[Pair], decision: str) -> None:
        for pair in pairs:
            pair.decision = decision
        self.changed.emit("pairs")


_SESSIONS: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> Session:
    """The one session of ``viewer``, so panels opened separately from the Plugins menu share it with the dock."""
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]
