"""One process per run folder: a lock file that names its holder, and recovery from a holder that died.

Two processes training in one run folder (a second ``--resume`` of a cancelled server job while the first still
runs, a double click in the plugin) would interleave their checkpoints and events. ``RunLock`` creates
``RUN/.lock`` exclusively (``O_CREAT | O_EXCL``: atomic on local filesystems and NFSv3+) holding the holder's pid
and host, and refreshes its time every ``HEARTBEAT_S`` while held. A lock whose pid no longer runs on this host is
stale (the holder was killed: kill -9, a power cut), and so is the lock of another host (a SLURM node) that has not
been refreshed for ``STALE_AFTER_S`` (its node died or the job hit its time limit); a stale lock is taken over. A
live holder is refused with a message that says who holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from alignflow.atomic import HOST, process_alive
from alignflow.errors import InputError

LOCK_FILE = ".lock"
UNWRITTEN_LOCK_S = 10.0  # an empty lock file this old was left by a holder killed while it wrote it
HEARTBEAT_S = 30.0  # the holder touches its lock this often
STALE_AFTER_S = 600.0  # a lock of another host not touched for this long is stale (generous: clocks of nodes differ)


class RunLock:
    """``with RunLock(run_dir):`` holds the run folder for this process; ``stale`` says whether a dead holder's lock
    was taken over (for a log line)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.stale: dict[str, Any] | None = None
        self._held = False
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": HOST, "since": time.time()}
        for _ in range(3):  # a stale lock removed by us (or by a racing process) is retried
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released between our open and our read
                if self._is_stale(holder):
                    self.stale = holder
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise InputError(self.path.parent, "a run folder that no other process is using (one job, one process per "
                                 f"run folder; wait for it, cancel it, or delete {self.path} if that process is gone; "
                                 f"another host's lock is taken over {STALE_AFTER_S / 60:g} min after its last heartbeat)",
                                 f"held by process {holder.get('pid')} on {holder.get('host')}") from None
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
            self._held = True
            self._stop.clear()
            self._heartbeat = threading.Thread(target=self._beat, name="alignflow-run-lock", daemon=True)
            self._heartbeat.start()
            return self
        raise InputError(self.path, "a lock file that can be taken", "it kept changing (another process is starting here)")

    def _holder(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
        except ValueError:
            holder = None
        if not isinstance(holder, dict):  # a holder killed between creating the file and writing it
            return {"pid": None, "host": "unknown (an empty or unreadable lock file)", "age": age}
        return {**holder, "age": age}

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    @staticmethod
    def _is_stale(holder: dict[str, Any]) -> bool:
        """The holder ran on this host and has ended (or never finished writing the lock, some seconds ago), or ran on
        another host and has not touched the lock for ``STALE_AFTER_S``."""
        if holder.get("pid") is None:
            return holder.get("age", 0.0) > UNWRITTEN_LOCK_S
        if holder.get("host") != HOST:
            return holder.get("age", 0.0) > STALE_AFTER_S
        return isinstance(holder["pid"], int) and not process_alive(holder["pid"])

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
            self._heartbeat = None
        if self._held:
            self._held = False
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
