"""The one progress-callback signature of the engine's functions: ``on_progress(stage, done, total)``.

Long engine calls (generation, export, feature extraction, ...) take an optional ``on_progress`` callable and call it
with a stage name, the work done and the total (images or steps). Front ends render it as they like: the CLI as a
tqdm bar, the plugin as a progress bar through its worker's signals, a run folder as "progress" events
(``EventLog.progress``). Training runs report through their event stream instead (``alignflow.runs.events``).
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)


def report_progress(on_progress: ProgressCallback | None, stage: str, done: int, total: int) -> None:
    if on_progress is not None:
        on_progress(stage, done, total)
