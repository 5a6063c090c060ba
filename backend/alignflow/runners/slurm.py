"""The SLURM runner: the same jobs as the local runner, run on a cluster through submitit.

A job is the local runner's job (the same folder under ``jobs_root``, the same ``python -m alignflow.cli KIND
--config FILE`` command, progress from the run folder's ``events.jsonl``), started by a SLURM allocation instead of
a subprocess of this computer. ``jobs_root`` and the run folders must be on a filesystem that the login node and
the compute nodes share; submitit keeps its own files (the batch script, logs) in ``JOB/submitit/``.

With ``tasks_per_node`` x ``nodes`` > 1 every task runs the command with torch.distributed's variables
(``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...) from submitit, so stage-1 training is data parallel over the tasks
(see ``alignflow.runs.loop``): one task per GPU.

submitit pickles the task it sends to the nodes (a ``JobTask`` written and read by the same code, never a user
file); the runner reads how a job ended from the exit code the task writes, never from submitit's pickled result.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alignflow.atomic import atomic_write_json
from alignflow.errors import InputError
from alignflow.runners.base import FAILED, QUEUED, RUNNING, JobStatus
from alignflow.runners.local import CANCEL_GRACE_S, EXIT_FILE, JOB_FILE, LocalRunner, live_processes_in_group

CLUSTERS = ("slurm", "local")  # "local": submitit's LocalExecutor, the same path without a cluster (tests, a workstation)
CHILD_FILE = "child.json"  # the job's process on the node: {"pid": ...} (its own process group)
PENDING_STATES = ("PENDING", "REQUEUED", "CONFIGURING", "RESIZING", "SUSPENDED", "UNKNOWN")
ACTIVE_STATES = (*PENDING_STATES, "RUNNING", "COMPLETING")


@dataclass
class SlurmOptions:
    """The allocation each job asks for (submitit's executor parameters)."""

    partition: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1  # > 1: data-parallel training, one task per GPU
    gpus_per_node: int = 0
    cpus_per_task: int = 4
    mem_gb: float | None = None
    timeout_min: int = 24 * 60  # the job's time limit; submitit's own default (5 min on SLURM) is far too short
    account: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines before the job, e.g. "module load cuda", "source venv/bin/activate"

    def validate(self) -> None:
        for name in ("nodes", "tasks_per_node", "cpus_per_task", "timeout_min"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(name, "a positive integer", repr(value))
        if not isinstance(self.gpus_per_node, int) or self.gpus_per_node < 0:
            raise InputError("gpus_per_node", "an integer >= 0", repr(self.gpus_per_node))

    def executor_parameters(self, cluster: str) -> dict[str, Any]:
        parameters: dict[str, Any] = {"nodes": self.nodes, "tasks_per_node": self.tasks_per_node, "gpus_per_node": self.gpus_per_node,
                                      "cpus_per_task": self.cpus_per_task, "timeout_min": self.timeout_min, "name": "alignflow"}
        if self.mem_gb is not None:
            parameters["mem_gb"] = self.mem_gb
        if cluster == "slurm":
            parameters.update({f"slurm_{key}": value for key, value in (("partition", self.partition), ("account", self.account)) if value})
            if self.setup:
                parameters["slurm_setup"] = list(self.setup)
        elif self.setup:
            parameters["local_setup"] = list(self.setup)
        return parameters


@dataclass
class JobTask:
    """What each task of the allocation runs: the job's command, its output in the job folder, its exit code.

    The command runs in a process group of its own, whose id goes to ``child.json``: the runner interrupts it
    there (SIGINT, so training writes a checkpoint) when the job is cancelled on this machine.
    """

    command: list[str]
    folder: str
    cwd: str

    def __call__(self) -> int:
        import submitit

        environment = submitit.JobEnvironment()
        rank, tasks = environment.global_rank, environment.num_tasks
        if tasks > 1:  # torch.distributed's variables, read by accelerate in the training loop
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        folder = Path(self.folder)
        log_name = "output.log" if rank == 0 else f"output.rank{rank}.log"
        with open(folder / log_name, "ab") as log:
            process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd, start_new_session=True)
            if rank == 0:
                atomic_write_json(folder / CHILD_FILE, {"pid": process.pid, "host": os.uname().nodename})
            try:
                code = process.wait()
            except BaseException:
                # The allocation is being stopped. On SLURM the job's processes got the signal too (scancel signals
                # every process of the job): a second SIGINT would break off the checkpoint it is writing. Wait for
                # it, and leave nothing behind.
                _stop_group(process.pid, interrupt=False)
                raise
        if rank == 0:
            (folder / EXIT_FILE).write_text(f"{code}\n")
        return code


def _stop_group(pgid: int, interrupt: bool = True, grace_s: float = CANCEL_GRACE_S) -> None:
    """SIGINT to a process group (training writes a checkpoint), SIGKILL to what is left after ``grace_s``."""
    if interrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while live_processes_in_group(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        if live_processes_in_group(pgid):
            os.killpg(pgid, signal.SIGKILL)


class SlurmRunner(LocalRunner):
    """Jobs on a SLURM cluster (or submitit's local executor); implements :class:`alignflow.runners.base.Runner`.

    The job folders, ``events``, ``fetch`` and ``jobs`` are the local runner's; what differs is who starts the job
    (``submit``), who knows whether it still runs (``status``) and how it is stopped (``cancel``).
    """

    def __init__(self, jobs_root: str | Path, options: SlurmOptions | None = None, cluster: str = "slurm",
                 python: str = sys.executable, env: dict[str, str] | None = None):
        """``cluster`` and ``options`` are for jobs this object submits; a job's status and cancel use the cluster
        recorded in its ``job.json``."""
        if cluster not in CLUSTERS:
            raise InputError("cluster", f"one of {', '.join(CLUSTERS)}", repr(cluster))
        super().__init__(jobs_root, python, env)
        self.options = options or SlurmOptions()
        self.options.validate()
        self.cluster = cluster
        self._submitted: dict[str, Any] = {}  # job id -> submitit job, for jobs this object submitted

    # ------------------------------------------------------------------ Runner
    def submit(self, kind: str, config: dict[str, Any], resume: bool = False) -> str:
        import submitit

        job_id, folder, command = self.new_job(kind, config, resume)
        executor = submitit.AutoExecutor(folder=folder / "submitit", cluster=self.cluster)
        executor.update_parameters(**self.options.executor_parameters(self.cluster))
        with _environment(self.env):  # the job inherits the submitter's environment, as in the local runner
            job = executor.submit(JobTask(command, str(folder), os.getcwd()))
        self._submitted[job_id] = job
        atomic_write_json(folder / JOB_FILE, {"job_id": job_id, "kind": kind, "run_dir": str(Path(config["out"])), "pid": None,
                                              "scheduler_id": str(job.job_id), "cluster": self.cluster, "command": command,
                                              "options": asdict(self.options), "submitted": time.time()})
        return job_id

    def status(self, job_id: str) -> JobStatus:
        status = super().status(job_id)  # exit code written by the task, cancel marker, else ``_alive``
        state = self._scheduler_state(job_id)
        if status.state == RUNNING and state.startswith(PENDING_STATES) and not (self.jobs_root / job_id / CHILD_FILE).exists():
            status.state = QUEUED
        if status.state == FAILED and status.exit_code is None:
            status.message = f"the {self.cluster} job ended without an exit code ({state}): {status.message}"
        status.details = {"scheduler_id": self._job(job_id)["scheduler_id"], "scheduler_state": state}
        return status

    def cancel(self, job_id: str) -> None:
        """Interrupt the job (SIGINT: training writes a checkpoint), then end its allocation after the grace time."""
        job = self._job(job_id)
        if not self._alive(job_id, None):
            return  # already finished: its state stays what it was
        (self.jobs_root / job_id / "cancelled").touch()
        if job["cluster"] == "slurm":
            # The processes run on a compute node: the scheduler delivers the signal to every process of the job.
            subprocess.run(["scancel", "--signal=INT", "--full", job["scheduler_id"]], check=False, capture_output=True)
        else:
            child = self.jobs_root / job_id / CHILD_FILE
            if child.exists():
                _stop_group(int(self._read_json(child)["pid"]))
        deadline = time.monotonic() + CANCEL_GRACE_S
        while self._alive(job_id, None) and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._alive(job_id, None) and (job["cluster"] == "slurm" or job_id in self._submitted):
            self._scheduler_job(job_id).cancel(check=False)  # scancel; locally, the controller stops its tasks

    # ------------------------------------------------------------------ scheduler
    def _alive(self, job_id: str, pid: int | None) -> bool:
        """Queued or running in the scheduler (``pid`` is the local runner's; SLURM jobs have none here)."""
        if (self.jobs_root / job_id / EXIT_FILE).exists():
            return False
        return self._scheduler_state(job_id).startswith(ACTIVE_STATES)

    def _scheduler_state(self, job_id: str) -> str:
        """SLURM's state of the job (PENDING, RUNNING, COMPLETED, TIMEOUT, ...), or the local executor's."""
        job = self._job(job_id)
        if job["cluster"] == "local" and job_id not in self._submitted:
            # A local job submitted by another client object: its scheduler id is its controller's process id.
            return "RUNNING" if super()._alive(job_id, int(job["scheduler_id"])) else "FINISHED"
        return str(self._scheduler_job(job_id).state)

    def _scheduler_job(self, job_id: str) -> Any:
        if job_id not in self._submitted:
            import submitit

            job = self._job(job_id)
            self._submitted[job_id] = submitit.SlurmJob(folder=self.jobs_root / job_id / "submitit", job_id=job["scheduler_id"])
        return self._submitted[job_id]

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        import json

        return json.loads(path.read_text())


@contextlib.contextmanager
def _environment(extra: dict[str, str] | None):
    saved = {key: os.environ.get(key) for key in (extra or {})}
    os.environ.update(extra or {})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
