"""Which folder a command may write: no command deletes what it did not create.

One rule for every command that writes an output folder (generate, masks, augment, export, segment,
evaluate-images, evaluate-segmentation, advise-references) and for training run folders:

* never a folder that is, or contains, one of the command's inputs (``--out DATA`` when DATA holds the masks read),
  whatever ``overwrite`` says: replacing it would delete the inputs;
* never a run folder (``events.jsonl``, ``checkpoints/``, ``generator/``, ``segmenter/``) that another command wrote,
  whatever ``overwrite`` says;
* a new or empty folder is fine; an existing non-empty one only with ``overwrite`` (``--overwrite``), or when the
  command continues its own earlier output (``resumable``: augment, a training run).

Commands whose output folder holds an event log mark it (``OWNER_FILE``), so that they can recognise their own
folder later, and nobody else replaces it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from alignflow.atomic import atomic_write_json
from alignflow.errors import InputError

OWNER_FILE = ".alignflow-output.json"
RUN_MARKERS = ("events.jsonl", "checkpoints", "generator", "segmenter")


def output_owner(folder: Path) -> str | None:
    """The command that marked ``folder`` as its output, or None."""
    try:
        owner = json.loads((Path(folder) / OWNER_FILE).read_text(encoding="utf-8")).get("command")
    except (OSError, ValueError, AttributeError):
        return None
    return owner if isinstance(owner, str) else None


def mark_output(folder: Path, command: str) -> None:
    """Record that ``command`` writes ``folder`` (it may replace or continue it later; nobody else may)."""
    if output_owner(folder) != command:
        atomic_write_json(Path(folder) / OWNER_FILE, {"command": command})


def run_markers(folder: Path) -> list[str]:
    """What makes ``folder`` a run folder (an event log, checkpoints, a trained model), if anything."""
    return [name for name in RUN_MARKERS if (Path(folder) / name).exists()]


def input_paths(values: Any) -> Iterator[Path]:
    """Every string or path inside ``values`` (nested mappings and lists too) that names an existing file or folder."""
    if isinstance(values, dict):
        for value in values.values():
            yield from input_paths(value)
    elif isinstance(values, (list, tuple, set)):
        for value in values:
            yield from input_paths(value)
    elif isinstance(values, (str, os.PathLike)) and str(values) and os.path.exists(values):
        yield Path(values)


def _holds(folder: str, path: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_not_inputs(out: Path | str, inputs: Any, flag: str = "--out") -> None:
    """Refuse an output folder that is or contains one of ``inputs`` (files or folders, nested anyhow)."""
    target = os.path.realpath(out)
    for path in input_paths(inputs):
        if _holds(target, os.path.realpath(path)):
            raise InputError(flag, "an output folder that neither is nor contains the command's inputs (writing it would "
                             "replace them)", f"{out}, which holds the input {path}")


def check_output_folder(out: Path | str, command: str, *, inputs: Any = (), overwrite: bool = False,
                        resumable: bool = False, flag: str = "--out") -> Path:
    """Decide whether ``command`` may write ``out`` (see the module docstring); returns it as a Path.

    ``inputs``: what the command reads (paths, or mappings/lists holding them, e.g. the config's values without
    ``out``); ``resumable``: the command continues its own earlier output in ``out`` instead of replacing it.
    """
    out = Path(out)
    check_not_inputs(out, inputs, flag)
    if not out.exists():
        return out
    if not out.is_dir():
        raise InputError(out, "an output folder", "an existing file")
    if not any(out.iterdir()):
        return out
    owner = output_owner(out)
    markers = run_markers(out)
    if owner != command and markers:
        what = f"the output of `alignflow {owner}`" if owner else f"a run ({', '.join(markers)})"
        raise InputError(out, f"a new folder, or one that `alignflow {command}` wrote (this one holds {what}, which "
                         f"{command} does not replace even with --overwrite; choose another {flag})")
    if resumable and owner == command:
        return out
    if not overwrite:
        raise InputError(out, "a destination that does not exist yet or is empty (pass --overwrite / overwrite=True "
                         "to replace it)", "an existing non-empty folder")
    return out


def existing(paths: Iterable[Path | str | None]) -> list[Path]:
    """The given paths that are set (for passing optional inputs)."""
    return [Path(path) for path in paths if path]
