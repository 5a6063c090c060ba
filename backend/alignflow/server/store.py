"""Job records in SQLite: a restarted server knows every job it ever ran, and how each one ended."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alignflow.runners.base import QUEUED, RUNNING

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    config TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    resume INTEGER NOT NULL DEFAULT 0,
    resumed_from TEXT,
    request_id TEXT UNIQUE,
    slot TEXT,
    local_id TEXT,
    exit_code INTEGER,
    message TEXT,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL
)
"""


@dataclass
class JobRecord:
    job_id: str
    kind: str
    state: str
    config: dict[str, Any]
    run_dir: str
    resume: bool = False
    resumed_from: str | None = None
    request_id: str | None = None  # the client's idempotency key: a retried submit returns the first job
    slot: str | None = None  # the GPU (or "cpu") the job runs on
    local_id: str | None = None  # the local runner's id of the job's process
    exit_code: int | None = None
    message: str | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    def public(self) -> dict[str, Any]:
        """What the API shows: everything but the runner's internal id."""
        return {key: value for key, value in asdict(self).items() if key != "local_id"}


class JobStore:
    """One table of :class:`JobRecord`; safe to use from the API's threads and the scheduler's."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # readers (status polls) never wait for the scheduler's writes
            db.execute(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # autocommit: each statement is durable
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    def add(self, record: JobRecord) -> JobRecord:
        """Insert ``record``; with a ``request_id`` already seen, return that request's job instead."""
        values = asdict(record)
        values["config"] = json.dumps(record.config)
        columns = ", ".join(values)
        with self._lock, self._connect() as db:
            if record.request_id is not None:
                existing = db.execute("SELECT * FROM jobs WHERE request_id = ?", (record.request_id,)).fetchone()
                if existing is not None:
                    return _record(existing)
            db.execute(f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' for _ in values)})", tuple(values.values()))
        return record

    def get(self, job_id: str) -> JobRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return _record(row) if row is not None else None

    def list(self, states: tuple[str, ...] | None = None) -> list[JobRecord]:
        query, arguments = "SELECT * FROM jobs", ()
        if states:
            query += f" WHERE state IN ({', '.join('?' for _ in states)})"
            arguments = states
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY submitted, job_id", arguments).fetchall()
        return [_record(row) for row in rows]

    def update(self, job_id: str, **fields: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._lock, self._connect() as db:
            db.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", (*fields.values(), job_id))

    def active(self) -> list[JobRecord]:
        return self.list((QUEUED, RUNNING))


def _record(row: sqlite3.Row) -> JobRecord:
    values = dict(row)
    values["config"] = json.loads(values["config"])
    values["resume"] = bool(values["resume"])
    return JobRecord(**values)
