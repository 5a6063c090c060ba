"""Where the plugin's jobs run. One factory, so the remote runner (issue 6) plugs in as another entry here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alignflow.data import cache_root
from alignflow.runners.base import Runner
from alignflow.runners.local import LocalRunner


def jobs_folder() -> Path:
    """Job records of the plugin's local runner (a restarted napari finds its jobs here)."""
    return cache_root() / "plugin-jobs"


# Run-on choices shown in the Training panel, in order. A remote runner adds an entry once it exists.
RUN_LOCATIONS: dict[str, Callable[[], Runner]] = {
    "this computer": lambda: LocalRunner(jobs_folder()),
}


def make_runner(location: str) -> Runner:
    return RUN_LOCATIONS[location]()
