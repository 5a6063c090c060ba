"""The local runner: each job is an ``alignflow`` subprocess on this computer (the plugin's default).

A separate process, not a thread, because training saturates the CPU and holds the GIL in Python glue; napari's
viewer must stay responsive (micro-sam measured the cost of thread workers for long jobs). Jobs live in
``jobs_root/<job id>/`` (``job.json`` with the config file and the process id), so a restarted client still
finds them; progress is the job's own ``events.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from alignflow.atomic import atomic_write_json
from alignflow.errors import InputError
from alignflow.runners.base import CANCELLED, FAILED, JOB_KINDS, RESUMABLE_KINDS, RUNNING, SUCCEEDED, JobStatus
from alignflow.runs.events import EVENTS_FILE, read_events

JOB_FILE = "job.json"
CONFIG_FILE = "config.json"
EXIT_FILE = "exit_code"
CANCEL_GRACE_S = 20.0  # SIGINT lets training write a checkpoint before SIGKILL


def live_processes_in_group(pgid: int) -> list[int]:
    """Processes of a process group that still run (zombies excluded); Linux /proc, else a signal-0 probe."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    live = []
    for stat_file in proc.glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            live.append(int(stat_file.parent.name))
    return live


def read_complete_events(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The events on the complete lines of ``events.jsonl`` after byte ``offset``, and the offset reached.

    A line being written is left for the next call; lines that are not JSON are skipped (as ``read_events`` does),
    so counts agree with it. Pollers (the plugin's UI thread, the server's event streams) read on from the offset
    instead of parsing the whole file each time."""
    if not path.exists():
        return [], offset
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read()
    complete = data[: data.rfind(b"\n") + 1]
    events = []
    for line in complete.splitlines():
        with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
            events.append(json.loads(line))
    return events, offset + len(complete)


class LocalRunner:
    """Runs jobs as subprocesses of this machine; implements :class:`alignflow.runners.base.Runner`."""

    def __init__(self, jobs_root: str | Path, python: str = sys.executable, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None):
        self.jobs_root = Path(jobs_root)
        self.jobs_root.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.env = env
        self.cwd = cwd  # the jobs' working directory (the server's data root: relative paths stay inside it)
        self._processes: dict[str, subprocess.Popen] = {}
        self._cursors: dict[str, tuple[int, int]] = {}  # job -> (events read, byte offset reached)

    # ------------------------------------------------------------------ Runner
    def submit(self, kind: str, config: dict[str, Any], resume: bool = False) -> str:
        job_id, folder, command = self.new_job(kind, config, resume)
        # The shell records the exit code, so a client that restarts after the job ended still learns how it ended.
        with open(folder / "output.log", "ab") as log:
            process = subprocess.Popen(
                ["/bin/sh", "-c", '"$@"; echo $? > "$0"', str(folder / EXIT_FILE), *command],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self._environment(), cwd=self.cwd,
            )
        self._processes[job_id] = process
        atomic_write_json(folder / JOB_FILE, {"job_id": job_id, "kind": kind, "run_dir": str(Path(config["out"])),
                                              "pid": process.pid, "command": command, "submitted": time.time()})
        return job_id

    def status(self, job_id: str) -> JobStatus:
        job = self._job(job_id)
        folder = self.jobs_root / job_id
        exit_code = self._exit_code(job_id)
        if (folder / "cancelled").exists():
            # Cancelled only once nothing of the job runs: until then the job may still write its checkpoint and hold
            # the run folder's lock, and a client that resumed on "cancelled" would find the folder taken.
            # (A SLURM job has no local pid: the SLURM runner's cancel waits for the scheduler instead.)
            state = RUNNING if job["pid"] is not None and live_processes_in_group(job["pid"]) else CANCELLED
        elif exit_code is None:
            state = RUNNING if self._alive(job_id, job["pid"]) else FAILED
        else:
            state = SUCCEEDED if exit_code == 0 else FAILED
        message = None
        if state == FAILED:
            errors = [e for e in read_events(Path(job["run_dir"])) if e.get("type") == "error"]
            message = errors[-1]["message"] if errors else self._last_output_line(folder)
        return JobStatus(job_id, job["kind"], state, job["run_dir"], exit_code, message)

    def events(self, job_id: str, since: int = 0) -> list[dict[str, Any]]:
        # A poller (the plugin's UI thread, twice a second) asks for the events after those it has: continue from
        # the byte offset reached last time instead of parsing the whole file again.
        count, offset = self._cursors.get(job_id, (0, 0))
        if since < count:
            count, offset = 0, 0
        new, offset = read_complete_events(Path(self._job(job_id)["run_dir"]) / EVENTS_FILE, offset)
        self._cursors[job_id] = (count + len(new), offset)
        return new[since - count:]

    def cancel(self, job_id: str) -> None:
        """SIGINT to the job's process group (training checkpoints), SIGKILL to what is left after the grace time;
        returns once no process of the group runs. Blocks up to ``CANCEL_GRACE_S``: call it off a UI thread."""
        job = self._job(job_id)
        if not self._alive(job_id, job["pid"]):
            return  # already finished: its state stays what it was
        (self.jobs_root / job_id / "cancelled").touch()
        # The whole group, not just the shell: the shell may exit on SIGINT while the job still writes its checkpoint.
        self._signal(job["pid"], signal.SIGINT)
        deadline = time.monotonic() + CANCEL_GRACE_S
        while live_processes_in_group(job["pid"]) and time.monotonic() < deadline:
            self._exit_code(job_id)  # reap the shell
            time.sleep(0.1)
        if live_processes_in_group(job["pid"]):
            self._signal(job["pid"], signal.SIGKILL)
            while live_processes_in_group(job["pid"]):
                time.sleep(0.05)
        self._exit_code(job_id)

    def fetch(self, job_id: str, destination: Path) -> Path:
        source = Path(self._job(job_id)["run_dir"])
        destination = Path(destination)
        if source.resolve() != destination.resolve():
            shutil.copytree(source, destination, dirs_exist_ok=True)
        return destination

    # ------------------------------------------------------------------ helpers
    def new_job(self, kind: str, config: dict[str, Any], resume: bool = False) -> tuple[str, Path, list[str]]:
        """A checked job's id, its folder (with the config file) and the command that runs it:
        ``python -m alignflow.cli KIND --config FILE [--resume]``. Other runners (SLURM) start the same command."""
        if kind not in JOB_KINDS:
            raise InputError("kind", f"one of {', '.join(JOB_KINDS)}", repr(kind))
        if resume and kind not in RESUMABLE_KINDS:
            raise InputError("resume", f"a training job ({', '.join(RESUMABLE_KINDS)})", repr(kind))
        if not config.get("out"):
            raise InputError("config.out", "the job's run or output folder", "nothing")
        job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        folder = self.jobs_root / job_id
        folder.mkdir(parents=True)
        atomic_write_json(folder / CONFIG_FILE, config)
        command = [self.python, "-m", "alignflow.cli", kind, "--config", str(folder / CONFIG_FILE), *(["--resume"] if resume else [])]
        return job_id, folder, command

    def jobs(self) -> list[str]:
        return sorted(p.name for p in self.jobs_root.iterdir() if (p / JOB_FILE).exists())

    def _job(self, job_id: str) -> dict[str, Any]:
        path = self.jobs_root / job_id / JOB_FILE
        if not path.exists():
            raise InputError("job_id", f"a job of {self.jobs_root}", repr(job_id))
        return json.loads(path.read_text())

    def _exit_code(self, job_id: str) -> int | None:
        path = self.jobs_root / job_id / EXIT_FILE
        process = self._processes.get(job_id)
        if process is not None:
            process.poll()  # reap the shell so its pid is not left a zombie
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _alive(self, job_id: str, pid: int) -> bool:
        process = self._processes.get(job_id)
        if process is not None:
            return process.poll() is None
        # Not started by this object: ask the kernel. A zombie (ended, not yet reaped) has state "Z" and is not alive.
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        except OSError:  # no procfs (macOS): fall back to signal 0, which counts zombies as alive
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            return True
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    @staticmethod
    def _signal(pid: int, signum: int) -> None:
        try:
            os.killpg(pid, signum)  # the whole session: the shell, the job and anything it started
        except ProcessLookupError:
            pass

    @staticmethod
    def _last_output_line(folder: Path) -> str | None:
        lines = (folder / "output.log").read_text(errors="replace").strip().splitlines() if (folder / "output.log").exists() else []
        return lines[-1] if lines else "the job's process ended without an exit code"

    def _environment(self) -> dict[str, str]:
        return {**os.environ, **(self.env or {})}
