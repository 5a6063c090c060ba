"""What every ``alignflow`` subcommand shares: common flags, reading ``--config`` under the flags, progress bars.

Each engine area's ``commands.py`` registers its subcommands with these helpers; ``alignflow.cli`` only builds the
parser from them and dispatches. Nothing here imports torch, so ``alignflow --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

EXIT_INPUT_ERROR = 2
T = TypeVar("T")

# Stages whose progress counts images, not steps.
IMAGE_STAGES = ("encode", "generate", "masks:generate", "export", "segment", "features")


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML or JSON file of options (flags given here override it)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocast speeds up CPU training ~1.4x")
    parser.add_argument("--seed", type=int)


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every training command shares."""
    parser.add_argument("--source", help="labelled source dataset: a folder with images/ and masks/")
    parser.add_argument("--out", help="run folder")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--max-pairs", type=int, help="train on the first N pairs only")
    parser.add_argument("--log-every", type=int, help="a progress event every N steps")
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--preview-every", type=int)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def read_options(args: argparse.Namespace, drop: Sequence[str] = ()) -> dict[str, Any]:
    """The ``--config`` file's options, overridden by the flags given (parsers use ``argument_default=SUPPRESS``,
    so a flag the user did not type is absent and does not override the file)."""
    from alignflow.config import read_config_file

    values = read_config_file(args.config) if getattr(args, "config", None) else {}
    values.update({key: value for key, value in vars(args).items() if key not in ("command", "config", "handler", *drop)})
    return values


def with_stored_options(values: dict[str, Any], resume: bool) -> dict[str, Any]:
    """With ``--resume``, the options the run in ``out`` was started with (its ``config.json``) under the options given
    now, so that ``--resume --out RUN`` alone continues it as it was; what is given again must agree with the run's
    architecture (``runs.loop`` refuses a change by name). Nested sections merge key by key."""
    import json
    from pathlib import Path

    stored_file = Path(values["out"]) / "config.json" if resume and values.get("out") else None
    if stored_file is None or not stored_file.is_file():
        return values
    try:
        stored = json.loads(stored_file.read_text(encoding="utf-8"))
    except ValueError:
        return values  # the run itself reports a broken config.json
    return _merged(stored, values) if isinstance(stored, dict) else values


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


class TerminalProgress:
    """One tqdm bar per stage on stderr, fed by the event stream (``__call__``) or an engine ``on_progress``."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}
        self.done: dict[str, int] = {}  # the last count reported per stage (for a closing line)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        stage = str(event.get("stage", ""))
        if kind in ("start", "progress", "resume") and "total" in event:
            bar = self._bar(stage, event["total"])
            bar.n = event.get("step", 0)
            postfix = {k: f"{v:.4f}" for k, v in event.items() if k.startswith("loss") and isinstance(v, float)}
            if postfix:
                bar.set_postfix(postfix, refresh=False)
            bar.refresh()
        elif kind in ("warning", "error"):
            from tqdm import tqdm

            tqdm.write(f"{kind}: {event.get('message')}", file=sys.stderr)
        elif kind == "done" and stage in self.bars:
            self.bars.pop(stage).close()

    def progress(self, stage: str, done: int, total: int) -> None:
        """An engine ``on_progress`` callback (``alignflow.progress``)."""
        self.done[stage] = done
        bar = self._bar(stage, total)
        bar.n = done
        bar.refresh()

    def _bar(self, stage: str, total: int) -> Any:
        from tqdm import tqdm

        if stage not in self.bars or self.bars[stage].total != total:
            self.close()  # one bar at a time: stages run one after another
            label = {"1": "stage 1", "2": "stage 2"}.get(stage, stage)
            unit = "img" if any(stage.startswith(s) or s in stage for s in IMAGE_STAGES) else "step"
            self.bars[stage] = tqdm(total=total, desc=label, unit=unit, dynamic_ncols=True, file=sys.stderr)
        return self.bars[stage]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def run_with_progress(job: Callable[[list[Callable[[dict[str, Any]], None]]], T]) -> T:
    """Run an engine call with progress bars on the terminal, drawn from its event stream (``job(listeners)``);
    the bars are closed before any error line."""
    printer = TerminalProgress()
    try:
        return job([printer])
    finally:
        printer.close()
