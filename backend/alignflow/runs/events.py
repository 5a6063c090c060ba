"""The run folder's event stream: ``events.jsonl``, one JSON object per line, flushed as it happens.

The CLI renders it as a progress bar; the napari plugin and the remote server read the same file. Event types:
start, progress, preview, checkpoint, warning, error, done.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"
Listener = Callable[[dict[str, Any]], None]


class EventLog:
    """Appends events to ``run_dir/events.jsonl`` and forwards each one to in-process listeners."""

    def __init__(self, run_dir: Path, listeners: list[Listener] | None = None):
        self.path = Path(run_dir) / EVENTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.listeners = list(listeners or [])

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        event = {"type": event_type, "time": time.time(), **fields}
        line = json.dumps(event, default=str)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        for listener in self.listeners:
            listener(event)
        return event

    def progress(self, stage: str, done: int, total: int) -> None:
        """An engine ``on_progress`` callback (``alignflow.progress``) that becomes "progress" events."""
        self.emit("progress", stage=stage, step=done, total=total)


def read_events(run_dir: Path) -> Iterator[dict[str, Any]]:
    """Events written so far; a partly written last line (a reader racing the writer) is skipped."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
