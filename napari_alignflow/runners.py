"""Where the plugin's jobs run: this computer (LocalRunner) or an ``alignflow serve`` server (RemoteRunner), and the
few calls the Training panel makes that differ between them (submit/resume, preview images)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from alignflow.data import cache_root, read_image
from alignflow.errors import InputError
from alignflow.runners.base import JobStatus, Runner
from alignflow.runners.local import LocalRunner
from alignflow.runners.remote import RemoteError, RemoteRunner

LOCAL, REMOTE = "this computer", "remote server"
# Remote requests: a timeout each, retried with backoff (0.5, 1, 2, 4, 8 s) before the panel reports the server down.
REMOTE_TIMEOUT_S = 30.0
REMOTE_RETRIES = 5


def jobs_folder() -> Path:
    """Job records of the plugin's local runner (a restarted napari finds its jobs here)."""
    return cache_root() / "plugin-jobs"


def _remote(url: str = "", token: str = "") -> RemoteRunner:
    return RemoteRunner(url.strip(), token.strip(), timeout=REMOTE_TIMEOUT_S, retries=REMOTE_RETRIES)


# Run-on choices shown in the Training panel, in order; each takes the panel's server settings (url, token).
RUN_LOCATIONS: dict[str, Callable[..., Runner]] = {
    LOCAL: lambda **_: LocalRunner(jobs_folder()),
    REMOTE: _remote,
}


def make_runner(location: str, **settings: str) -> Runner:
    return RUN_LOCATIONS[location](**settings)


def submit(runner: Runner, kind: str, config: dict[str, Any], resume: bool = False, previous: str | None = None) -> str:
    """Start a job, or with ``resume`` continue a training run from its last checkpoint: locally the run in
    ``config["out"]``; on a server the job ``previous`` (RemoteRunner resumes jobs, not folders)."""
    if not isinstance(runner, RemoteRunner):
        return runner.submit(kind, config, resume=resume)
    if not resume:
        return runner.submit(kind, config)
    if previous is None:
        raise InputError("Resume", "a server job started from this panel (cancelled or failed) to continue", "none")
    return runner.resume(previous)


@dataclass
class Poll:
    """One look at a job: its state and the events since the last look, and the newest preview image among them."""

    status: JobStatus
    events: list[dict[str, Any]]
    preview: np.ndarray | None


def poll(runner: Runner, job: str, since: int) -> Poll:
    """Status first, then events: once the status is final, the events read after it are all there are."""
    status = runner.status(job)
    events = runner.events(job, since=since)
    previews = [event["path"] for event in events if event.get("type") == "preview" and "path" in event]
    return Poll(status, events, read_preview(runner, job, status, previews[-1]) if previews else None)


def read_preview(runner: Runner, job: str, status: JobStatus, path: str) -> np.ndarray | None:
    """A preview image an event names: a local file, or on a server the file of the job's run folder.

    Previews are a courtesy: one that cannot be read (not written yet, a dropped connection) is skipped; the next
    preview event brings the next one.
    """
    if not isinstance(runner, RemoteRunner):
        try:
            return read_image(path)
        except (OSError, ValueError):
            return None
    try:
        relative = PurePosixPath(path).relative_to(status.run_dir)
    except ValueError:
        return None
    import requests
    from PIL import Image

    try:
        content = runner.read_file(job, relative, retry=False)  # no retries, see the docstring
    except (RemoteError, InputError, requests.RequestException):
        return None
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))
