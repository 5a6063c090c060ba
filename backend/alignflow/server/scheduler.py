"""Jobs on the server: configs resolved inside the data root, one queue per GPU, restart recovery.

Each GPU is a slot that runs one job at a time with ``CUDA_VISIBLE_DEVICES`` set to it (``cpu``: no GPU visible);
queued jobs start in submission order on the first free slot. The processes are the local runner's (their own
session, cancelled with SIGINT then SIGKILL to the whole process group), so they outlive a killed server; on start
the scheduler re-reads every running job: still alive -> tracked again, gone without an exit code -> failed and
resumable.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from alignflow.errors import InputError
from alignflow.models.feature_encoders import DINO_PREFIX
from alignflow.runners.archives import data_root_of
from alignflow.runners.base import CANCELLED, FAILED, JOB_KINDS, QUEUED, RUNNING
from alignflow.runners.base import RESUMABLE_KINDS as RESUME_FLAG_KINDS
from alignflow.runners.local import LocalRunner
from alignflow.server.store import JobRecord, JobStore

# Config keys whose values are files or folders (strings or lists of strings), for every job kind.
PATH_KEYS = ("source", "references", "target", "masks", "init", "generator", "evaluator", "mask_segmenter", "segmenter", "images")
UPLOAD_PREFIX, JOB_PREFIX = "upload:", "job:"
# Kinds whose CLI continues a run folder with --resume (RESUME_FLAG_KINDS); augment resumes its finished stages by itself.
RESUMABLE_KINDS = (*RESUME_FLAG_KINDS, "augment")
DIED_MESSAGE = "the job's process ended while the server was down; resume it (POST /jobs/{job_id}/resume)"


def new_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


class Scheduler:
    """Queues, starts, tracks and cancels the server's jobs; every decision is recorded in the :class:`JobStore`."""

    def __init__(self, store: JobStore, data_root: Path, slots: list[str], python: str = sys.executable, poll_s: float = 0.5):
        if not slots:
            raise InputError("gpus", "at least one GPU id (or cpu)", got="none")
        self.store = store
        self.data_root = Path(data_root).resolve()
        self.runs_root = self.data_root / "runs"
        self.uploads_root = self.data_root / "uploads"
        self.poll_s = poll_s
        self.python = python
        self.slots = list(slots)
        self.runners = {slot: self._runner(slot) for slot in slots}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.recover()

    # ------------------------------------------------------------------ jobs
    def submit(self, kind: str, config: dict[str, Any], request_id: str | None = None) -> JobRecord:
        if kind not in JOB_KINDS:
            raise InputError("kind", f"one of {', '.join(JOB_KINDS)}", repr(kind))
        if not isinstance(config, dict):
            raise InputError("config", "a mapping of option names to values", type(config).__name__)
        job_id = new_id()
        run_dir = self.runs_root / job_id
        # The server owns where jobs write: a client's "out" (from a config file it also runs locally) is replaced.
        resolved = {**self.resolve_paths(config), "out": str(run_dir)}
        record = self.store.add(JobRecord(job_id, kind, QUEUED, resolved, str(run_dir), request_id=request_id))
        self.tick()
        return self.store.get(record.job_id) or record

    def resume(self, job_id: str) -> JobRecord:
        """A new job that continues ``job_id``'s run folder from its last checkpoint; refused while another job of
        that run folder is queued or running (one job, one process per run folder)."""
        with self._lock:
            original = self.get(job_id)
            if original.state not in (FAILED, CANCELLED):
                raise InputError(f"job {job_id}", "a failed or cancelled job to resume", got=f"a {original.state} job")
            if original.kind not in RESUMABLE_KINDS:
                raise InputError(f"job {job_id}", f"a resumable kind ({', '.join(RESUMABLE_KINDS)}); submit it again instead", got=original.kind)
            busy = [record.job_id for record in self.store.active() if record.run_dir == original.run_dir]
            if busy:
                raise InputError(f"job {job_id}", "a run folder that no other job uses (one job per run folder; follow or cancel "
                                 "that job instead)", got=f"job {busy[0]} is already {self.get(busy[0]).state} in it")
            record = JobRecord(new_id(), original.kind, QUEUED, original.config, original.run_dir,
                               resume=original.kind in RESUME_FLAG_KINDS, resumed_from=job_id)
            self.store.add(record)
        self.tick()
        return self.get(record.job_id)

    def get(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id)
        if record is None:
            raise KeyError(job_id)
        return record

    def cancel(self, job_id: str) -> JobRecord:
        with self._lock:
            record = self.get(job_id)
            if record.state == QUEUED:
                self.store.update(job_id, state=CANCELLED, finished=time.time(), message="cancelled before it started")
                return self.get(job_id)
        if record.state == RUNNING:
            # Outside the lock: the grace period lets training write a checkpoint (up to 20 s); polls keep answering.
            self.runners[record.slot].cancel(record.local_id)
            self.tick()
        return self.get(job_id)

    # ------------------------------------------------------------------ paths
    def resolve_paths(self, config: dict[str, Any]) -> dict[str, Any]:
        """One data-root rule for every string of the config, at any depth (``train.mask_segmenter``, ``export_name``,
        list items, anything a future option adds): ``upload:ID[/sub]`` and ``job:ID[/sub]`` become server folders,
        and no value may name a place outside the data root (an absolute path elsewhere, ``..`` out of it, ``~``, a
        symbolic link out of it). Jobs run with the data root as their working directory, so a relative value (a
        word such as ``cpu``, a hub id ``org/name``, a path) means the same place to the job as to this check. The
        keys in ``PATH_KEYS`` must also exist when given as a path."""
        return self._walk(config, "config", top=True)

    def _walk(self, value: Any, where: str, top: bool = False) -> Any:
        if isinstance(value, dict):
            resolved = {}
            for key, item in value.items():
                name = f"{where}.{key}"
                if top and key == "out":  # replaced by the job's run folder (submit)
                    continue
                if top and key in PATH_KEYS and not isinstance(item, (str, list, dict, type(None))):
                    raise InputError(name, "a path, upload:ID or job:ID (or a list of them)", got=repr(item))
                if top and key in PATH_KEYS and isinstance(item, str):
                    resolved[key] = self._resolve(item, name)
                elif top and key in PATH_KEYS and isinstance(item, list) and all(isinstance(i, str) for i in item):
                    resolved[key] = [self._resolve(i, name) for i in item]
                else:
                    resolved[key] = self._walk(item, name)
            return resolved
        if isinstance(value, (list, tuple)):
            return [self._walk(item, where) for item in value]  # errors name the list, as the user wrote it
        if isinstance(value, str):
            return self._check_text(value, where)
        return value

    def _check_text(self, value: str, where: str) -> str:
        """A string that is not a declared path: upload:/job: references resolved, anything else kept as it is unless
        it would lead out of the data root."""
        if value.startswith(DINO_PREFIX):
            return DINO_PREFIX + self._check_text(value[len(DINO_PREFIX):], where)
        if value.startswith((UPLOAD_PREFIX, JOB_PREFIX)):
            return self._resolve(value, where)
        outside = value.startswith("~") or "\\" in value or "\x00" in value
        if not outside:
            try:
                outside = not (self.data_root / value).resolve().is_relative_to(self.data_root)
            except (OSError, RuntimeError, ValueError):  # a symlink loop, an unreadable component
                outside = True
        if outside:
            raise InputError(where, f"a value that stays inside the server's data root {self.data_root} (upload:ID, job:ID, "
                             "a path inside it, a hub id or a plain word)", got=repr(value))
        return value

    def _resolve(self, value: str, where: str) -> str:
        if value.startswith(UPLOAD_PREFIX):
            upload_id, _, rest = value[len(UPLOAD_PREFIX):].partition("/")
            folder = self.uploads_root / upload_id
            if not upload_id or not (folder / "data").is_dir():
                raise InputError(where, "the id of an uploaded set (POST /uploads)", got=repr(value))
            path = data_root_of(folder / "data") / rest
        elif value.startswith(JOB_PREFIX):
            job_id, _, rest = value[len(JOB_PREFIX):].partition("/")
            record = self.store.get(job_id)
            if record is None:
                raise InputError(where, "the id of a job of this server", got=repr(value))
            path = Path(record.run_dir) / rest
        else:
            path = self.data_root / value  # an absolute value stays absolute
        path = path.resolve()
        if not path.is_relative_to(self.data_root):
            raise InputError(where, f"upload:ID, job:ID or a path inside the server's data root {self.data_root}", got=repr(value))
        if not path.exists():
            raise InputError(where, "an existing file or folder on the server", got=repr(value))
        return str(path)

    # ------------------------------------------------------------------ scheduling
    def tick(self) -> None:
        """Record the jobs that ended, then start queued jobs on free slots (oldest first)."""
        with self._lock:
            busy: set[str] = set()
            for record in self.store.list((RUNNING,)):
                if not self._refresh(record):
                    busy.add(record.slot)
            free = [slot for slot in self.slots if slot not in busy]
            for record, slot in zip(self.store.list((QUEUED,)), free):
                self._start(record, slot)

    def _start(self, record: JobRecord, slot: str) -> None:
        runner = self.runners[slot]
        try:
            local_id = runner.submit(record.kind, record.config, resume=record.resume)
        except (OSError, InputError) as error:
            self.store.update(record.job_id, state=FAILED, finished=time.time(), message=f"could not start: {error}")
            return
        self.store.update(record.job_id, state=RUNNING, slot=slot, local_id=local_id, started=time.time())

    def _refresh(self, record: JobRecord) -> bool:
        """Update a running job's record from its process; True when it has ended."""
        status = self.runners[record.slot].status(record.local_id)
        if not status.finished:
            return False
        message = status.message
        if status.state == FAILED and status.exit_code is None:
            message = DIED_MESSAGE.format(job_id=record.job_id)
        self.store.update(record.job_id, state=status.state, exit_code=status.exit_code, message=message, finished=time.time())
        return True

    def recover(self) -> None:
        """After a restart: jobs whose process is gone are marked failed (resumable); live ones are tracked again."""
        for record in self.store.list((RUNNING,)):
            if record.slot not in self.runners:  # the server restarted with another GPU list
                self.runners[record.slot] = self._runner(record.slot)
        self.tick()

    def _runner(self, slot: str) -> LocalRunner:
        visible = "" if slot == "cpu" else slot  # an empty list hides every GPU
        return LocalRunner(self.data_root / "processes", self.python, env={"CUDA_VISIBLE_DEVICES": visible}, cwd=self.data_root)

    # ------------------------------------------------------------------ background thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="alignflow-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.tick()
            except Exception as error:  # a broken record must not stop the scheduling of every other job
                print(f"alignflow serve: scheduler: {error!r}", file=sys.stderr)

    def occupied(self) -> dict[str, str | None]:
        """Slot -> id of the job running there (None when free)."""
        running = {record.slot: record.job_id for record in self.store.list((RUNNING,))}
        return {slot: running.get(slot) for slot in self.slots}


