"""The contract every runner implements (see docs/architecture.md, "Runners").

A job is ``(kind, config)``: ``kind`` is an ``alignflow`` subcommand that runs long (``train``, ``align``,
``train-masks``, ``masks``, ``generate``, ``augment``, ``train-segmenter``, ``segment``), ``config`` the same
mapping its ``--config`` file takes. A job writes a run folder whose ``events.jsonl`` is the one source of progress;
runners only move it (a local file, an HTTP stream, a shared filesystem).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

JOB_KINDS: tuple[str, ...] = ("train", "align", "train-masks", "masks", "generate", "augment", "train-segmenter", "segment")
RESUMABLE_KINDS: tuple[str, ...] = ("train", "align", "train-masks", "train-segmenter")  # take ``--resume``

# Job states. "queued" -> "running" -> one of the final states.
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)


@dataclass
class JobStatus:
    job_id: str
    kind: str
    state: str
    run_dir: str  # where the job writes (on the machine that runs it)
    exit_code: int | None = None
    message: str | None = None  # the user-facing reason of a failure
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


class Runner(Protocol):
    def submit(self, kind: str, config: dict[str, Any], resume: bool = False) -> str:
        """Start (or queue) a job; returns its id. Raises InputError for an unknown kind or a bad config.

        ``resume`` continues the run in ``config["out"]`` from its last checkpoint (training kinds only)."""
        ...

    def status(self, job_id: str) -> JobStatus: ...

    def events(self, job_id: str, since: int = 0) -> list[dict[str, Any]]:
        """Events ``since`` (a count of events already seen) in order; never blocks."""
        ...

    def cancel(self, job_id: str) -> None:
        """Stop the job and every process it started; its last checkpoint stays, so it can be resumed."""
        ...

    def fetch(self, job_id: str, destination: Path) -> Path:
        """Copy the job's run folder (checkpoints, generator, outputs) to ``destination``; returns it."""
        ...
