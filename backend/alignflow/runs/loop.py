"""The training-run skeleton every model of the engine shares: run folder, resume, checkpoints, events, export.

A run writes ``config.json``, ``events.jsonl``, ``checkpoints/`` (resumable) and ``generator/`` (the result) to its
run folder. Subclasses (the image generator's ``Trainer``, the mask generator's ``MaskTrainer``) say what one step
is, what a preview looks like and what gets exported; the loop, the checkpoint cadence, resuming and the event
stream are written once here.

Under ``accelerate launch`` with several processes (GPUs, nodes, or CPU processes over gloo) the same loop is data
parallel: every process draws the same global batch and works on its rows of it, gradients are averaged over the
processes before each optimizer step, and only the main process writes the run folder. Alone (no launcher), the
loop is the plain single-process one, untouched by any of this.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from alignflow.atomic import atomic_write_json
from alignflow.device import resolve_device
from alignflow.errors import InputError
from alignflow.runs.checkpoint import latest_checkpoint, load_training_checkpoint, save_training_checkpoint
from alignflow.runs.events import EventLog, Listener
from alignflow.runs.lock import RunLock
from alignflow.runs.outputs import check_not_inputs

CONFIG_FILE = "config.json"


class TrainingDiverged(InputError):
    """The loss or the weights became non-finite: the run stops before that step reaches a checkpoint (exit 2)."""


def changed_settings(stored: dict[str, Any], current: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    """The settings among ``names`` whose values differ, nested ones by their full name (``generator.resolution``)."""
    changed = []
    for name in names:
        old, new = stored.get(name), current.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += [f"{name}.{key}" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
        elif old != new:
            changed.append(name)
    return changed


class RunConfig(Protocol):
    """What the loop reads from a run's config dataclass."""

    out: str
    steps: int
    batch_size: int
    device: str
    checkpoint_every: int
    preview_every: int
    log_every: int

    def validate(self) -> None: ...

    def to_dict(self) -> dict[str, Any]: ...


# A config class may name the settings a resumed run must keep (its architecture): ``fixed_on_resume``.


# The variables a launcher sets for the number of processes: torchrun (accelerate launch --multi_gpu), then MPI.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def _launcher_value(names: tuple[str, ...]) -> int | None:
    """The first of these environment variables a launcher set, as an integer (None without a launcher)."""
    for name in names:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def launched_process_count() -> int:
    """How many processes a launcher (accelerate launch, torchrun, mpirun) started for this run; 1 without one."""
    count = _launcher_value(WORLD_SIZE_VARIABLES)
    return 1 if count is None else count


def launched_as_main_process() -> bool:
    """Whether this is the launcher's process 0 (or there is no launcher): the one that writes and reports."""
    return _launcher_value(RANK_VARIABLES) in (None, 0)


@dataclass
class Processes:
    """This process among the processes of one run: alone (the default), or one of several under accelerate launch."""

    index: int = 0
    count: int = 1
    accelerator: Any = None  # accelerate.Accelerator when count > 1

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def distributed(self) -> bool:
        return self.count > 1

    def rows(self, global_batch: int, parameter: str) -> slice:
        """This process's rows of a global batch; the processes' rows, in order, make up the whole batch."""
        if global_batch % self.count:
            raise InputError(parameter, f"a multiple of the number of processes ({self.count}): each process takes "
                             f"{parameter} / {self.count} samples of the global batch", str(global_batch))
        share = global_batch // self.count
        return slice(self.index * share, (self.index + 1) * share)

    def wait(self) -> None:
        if self.distributed:
            self.accelerator.wait_for_everyone()

    def main_first(self) -> contextlib.AbstractContextManager:
        """The main process runs the block (e.g. writes a cache) before the others enter it."""
        return self.accelerator.main_process_first() if self.distributed else contextlib.nullcontext()

    def synchronise(self, parameters: list[torch.nn.Parameter], device: torch.device) -> None:
        """Every process continues from the main one's weights and random number generator state.

        The weights as DDP does at its start (the same seed builds the same model, this makes sure); the RNG state
        because the processes draw the same global batch and noise every step, and the main process may have used
        its generator while the others waited (encoding the dataset once for all).
        """
        if not self.distributed:
            return
        from accelerate.utils import broadcast, synchronize_rng_states

        with torch.no_grad():
            flat = broadcast(torch.cat([p.detach().reshape(-1) for p in parameters]), from_process=0)
            for parameter, values in zip(parameters, flat.split([p.numel() for p in parameters])):
                parameter.copy_(values.view_as(parameter))
        synchronize_rng_states(["torch", "cuda"] if device.type == "cuda" else ["torch"])

    def average_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Each gradient becomes the mean over the processes, as DDP's all-reduce makes it, in one flat all-reduce.

        By hand rather than through accelerate's DDP wrapper (``accelerator.prepare``): the engine's models are called
        through their own methods (``velocity``, ``guided_velocity``, ...), and DDP only synchronises the gradients of
        calls that go through its ``forward``. A parameter that no process used keeps no gradient, as in one process
        (AdamW would otherwise still move it through its momentum and weight decay).
        """
        if not self.distributed:
            return
        from accelerate.utils import reduce

        used = torch.tensor([p.grad is not None for p in parameters], dtype=torch.float32, device=parameters[0].device)
        grads = [p.grad.float().reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device) for p in parameters]
        flat = reduce(torch.cat([*grads, used]), reduction="sum")
        sums, used = flat[: -len(parameters)], flat[-len(parameters):]
        for parameter, total, anyone in zip(parameters, sums.split([p.numel() for p in parameters]), used.tolist()):
            parameter.grad = (total / self.count).view_as(parameter).to(parameter.dtype) if anyone else None

    def mean(self, terms: dict[str, float]) -> dict[str, float]:
        """Loss terms averaged over the processes: with equal shares, the global batch's values."""
        if not self.distributed:
            return terms
        from accelerate.utils import reduce

        values = reduce(torch.tensor([float(v) for v in terms.values()], dtype=torch.float64, device=self.accelerator.device))
        return dict(zip(terms, values.tolist()))


def join_processes(device_name: str) -> tuple[Processes, torch.device]:
    """This process's place in the run and its device: ``resolve_device`` alone, accelerate's choice when launched."""
    device = resolve_device(device_name)
    count = launched_process_count()
    if count == 1:
        return Processes(), device
    if device_name not in ("auto", "cpu", "cuda"):
        raise InputError("--device", "auto, cpu or cuda under a multi-process launch (each process takes its own GPU)", repr(device_name))
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=device.type == "cpu")
    return Processes(accelerator.process_index, accelerator.num_processes, accelerator), accelerator.device


class OtherProcessLog(EventLog):
    """The event log of a process other than the main one: only its errors reach events.jsonl, with its index."""

    def __init__(self, run_dir: Path, index: int):
        super().__init__(run_dir)
        self.index = index

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        if event_type == "error":
            return super().emit(event_type, process=self.index, **fields)
        return {"type": event_type, **fields}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak-memory window, so each run reports its own peak even when several share a process."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with contextlib.suppress(OSError):  # Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since ``reset_peak_memory``: CUDA allocator peak on a GPU, peak resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class StepTimer:
    """Accumulated seconds per phase, for the per-step cost breakdown."""

    totals: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds

    def per_step(self) -> dict[str, float]:
        return {name: value / max(1, self.count) for name, value in self.totals.items()}


class TrainingRun:
    """One training run to ``config.steps``. Subclasses set ``self.model`` and ``self.optimizer`` in ``_prepare``."""

    stage: int | str  # the ``stage`` field of this run's events
    result_folder: str = "generator"  # the subfolder ``_export`` writes the trained model to
    # Whether the subclass's step works on ``self.rows`` of the global batch, so that it can run in several processes.
    multi_process: bool = False

    def __init__(self, config: RunConfig, listeners: list[Listener] | None = None, resume: bool = False):
        config.validate()
        self.config = config
        self.run_dir = Path(config.out)
        self.resume = resume
        self.processes, self.device = join_processes(config.device)
        if self.processes.distributed and not self.multi_process:
            raise InputError("the number of processes", f"1 for a {type(self).__name__} run (only the image generator's "
                             "stage-1 training runs in several processes)", str(self.processes.count))
        self.rows = self.processes.rows(config.batch_size, "batch_size")
        self.log = EventLog(self.run_dir, listeners) if self.processes.is_main else OtherProcessLog(self.run_dir, self.processes.index)
        self.timer = StepTimer()
        self.model: torch.nn.Module
        self.optimizer: torch.optim.Optimizer

    # What a subclass provides.
    def _prepare(self) -> None:
        raise NotImplementedError

    def _step(self) -> dict[str, float]:
        """One optimisation step's forward and backward; returns the loss terms to log."""
        raise NotImplementedError

    def _write_preview(self, step: int) -> None:
        raise NotImplementedError

    def _export(self, step: int, seconds: float) -> Path:
        raise NotImplementedError

    # The loop.
    def run(self) -> Path:
        """Train to ``config.steps`` (continuing a checkpoint when resuming) and return the exported folder.

        The run folder is held by a lock file for the whole run (one process per run folder); the leftovers of an
        interrupted run (half-written checkpoints) are removed first.
        """
        check_not_inputs(self.run_dir, {k: v for k, v in self.config.to_dict().items() if k != "out"})
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(self.run_dir)
        if self.processes.is_main:
            lock.acquire()
        try:
            return self._run_locked(lock)
        finally:
            lock.release()

    def _run_locked(self, lock: RunLock) -> Path:
        config = self.config
        holds_run = latest_checkpoint(self.run_dir / "checkpoints") is not None or (self.run_dir / self.result_folder).exists()
        if not self.resume and holds_run:
            raise InputError(self.run_dir, "a new run folder (this one holds a run: add --resume to continue it, or choose another --out)")
        if self.processes.is_main:
            self._remove_leftovers(lock)
            if self.resume:
                self._check_resumed_config()
        self.processes.wait()  # every process has checked the folder before the main one writes to it
        finished = self._finished_result()
        if finished is not None:
            return finished
        try:
            self._prepare()
            start_step, seconds_before = self._maybe_resume()
            self.processes.synchronise(self._parameters(), self.device)
            if self.processes.is_main:
                atomic_write_json(self.run_dir / CONFIG_FILE, config.to_dict())
            parameters = sum(p.numel() for p in self._parameters())
            self.log.emit("start", stage=self.stage, step=start_step, total=config.steps, device=str(self.device), parameters=parameters,
                          **({"processes": self.processes.count} if self.processes.distributed else {}))
            return self._loop(start_step, seconds_before)
        except (InputError, FloatingPointError) as error:
            self.log.emit("error", message=str(error))
            raise
        except Exception as error:  # readers of events.jsonl (plugin, server) must learn that the run died
            self.log.emit("error", message=f"{type(error).__name__}: {error}")
            raise

    def _remove_leftovers(self, lock: RunLock) -> None:
        """Under the lock nobody else writes here: every temporary of an atomic write in the run folder and in its
        checkpoints/ was left by a process that died (a half-written checkpoint can be tens of MB)."""
        import shutil

        leftovers = [entry for folder in (self.run_dir, self.run_dir / "checkpoints") if folder.is_dir()
                     for entry in sorted(folder.iterdir()) if entry.name.startswith(".") and entry.name.endswith((".tmp", ".old"))]
        for entry in leftovers:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        notes = []
        if lock.stale is not None:
            notes.append(f"took over the lock of process {lock.stale.get('pid')} on {lock.stale.get('host')}, which has ended")
        if leftovers:
            notes.append(f"removed {len(leftovers)} leftover(s) of an interrupted run: {', '.join(e.name for e in leftovers[:5])}")
        if notes:
            self.log.emit("warning", message="; ".join(notes))

    def _check_resumed_config(self) -> None:
        """A resumed run keeps its architecture (``fixed_on_resume``) and never goes back to fewer steps."""
        stored_file = self.run_dir / CONFIG_FILE
        if stored_file.is_file():
            try:
                stored = json.loads(stored_file.read_text(encoding="utf-8"))
            except ValueError:
                stored = None
            if isinstance(stored, dict):
                changed = changed_settings(stored, self.config.to_dict(), tuple(getattr(self.config, "fixed_on_resume", ())))
                if changed:
                    name = changed[0]
                    head, _, key = name.partition(".")
                    old, new = stored.get(head), self.config.to_dict().get(head)
                    if key:
                        old, new = (old or {}).get(key), (new or {}).get(key)
                    raise InputError(f"--resume ({name})", f"the run's own {name} ({old!r}, in {stored_file}): a resumed run keeps "
                                     "its architecture; start a new run (another --out) to change it", repr(new))
        checkpoint = latest_checkpoint(self.run_dir / "checkpoints")
        summary = self.run_dir / "summary.json"
        reached = 0
        if checkpoint is not None:
            reached = int(json.loads((checkpoint / "state.json").read_text()).get("step", 0))
        if summary.is_file():
            reached = max(reached, int(json.loads(summary.read_text()).get("steps", 0)))
        if reached > self.config.steps:
            raise InputError("--steps", f"at least the {reached} steps this run has already trained (its checkpoint is at step "
                             f"{reached}; the weights cannot be un-trained)", str(self.config.steps))

    def _finished_result(self) -> Path | None:
        """When resuming a run that already reached ``config.steps``, its exported folder is the result."""
        summary = self.run_dir / "summary.json"
        if not (self.resume and summary.exists()):
            return None
        done = json.loads(summary.read_text())
        if done.get("steps") == self.config.steps and (self.run_dir / self.result_folder).is_dir():
            self.log.emit("done", **done, skipped=True)
            return self.run_dir / self.result_folder
        return None

    def _parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _maybe_resume(self) -> tuple[int, float]:
        checkpoint = latest_checkpoint(self.run_dir / "checkpoints") if self.resume else None
        if checkpoint is None:
            return 0, 0.0
        state = load_training_checkpoint(checkpoint, self.model, self.optimizer)
        self.log.emit("resume", stage=self.stage, step=state["step"], path=str(checkpoint))
        return int(state["step"]), float(state.get("seconds", 0.0))

    def _loop(self, start_step: int, seconds_before: float) -> Path:
        config = self.config
        self.model.train()
        reset_peak_memory(self.device)
        started = time.perf_counter()
        # The last step whose optimizer update is in the weights: an interruption before the update (in the forward or
        # backward) checkpoints the step before, one after it (in a listener, a checkpoint, a preview) this step.
        completed = step = start_step
        try:
            for step in range(start_step + 1, config.steps + 1):
                self.optimizer.zero_grad(set_to_none=True)
                terms = self._step()
                self.processes.average_gradients(self._parameters())
                terms = self.processes.mean(terms)
                if not all(math.isfinite(v) for v in terms.values()):  # before the update: the weights stay finite
                    raise self._diverged(step, "a non-finite loss " + ", ".join(f"{k}={v:.4g}" for k, v in terms.items()))
                try:
                    self.optimizer.step()
                except RuntimeError as error:  # torch cannot even form the update in float32 (lr 1e300)
                    if "overflow" not in str(error):
                        raise
                    raise self._diverged(step, "an update too large for float32") from None
                if not self._weights_finite():
                    raise self._diverged(step, "non-finite weights after the optimizer step")
                completed = step
                self.timer.count += 1
                if step % config.log_every == 0 or step == config.steps:
                    self._progress(step, start_step, started, terms)
                if step % config.checkpoint_every == 0 or step == config.steps:
                    self._checkpoint_with_time(step, seconds_before + time.perf_counter() - started)
                if (step % config.preview_every == 0 or step == config.steps) and self.processes.is_main:
                    self._write_preview(step)
        except KeyboardInterrupt:
            self._checkpoint_with_time(completed, seconds_before + time.perf_counter() - started)
            self.log.emit("error", message=f"interrupted at step {step}; resume with --resume")
            raise
        seconds = seconds_before + time.perf_counter() - started
        if not self.processes.is_main:
            self.processes.wait()  # until the main process has exported the model
            return self.run_dir / self.result_folder
        folder = self._export(config.steps, seconds)
        summary = {
            "stage": self.stage, "steps": config.steps, "seconds": seconds,
            "seconds_per_step": self.timer.per_step(), "peak_memory_mb": peak_memory_mb(self.device),
            self.result_folder: str(folder),
        }
        atomic_write_json(self.run_dir / "summary.json", summary)
        self.log.emit("done", **summary)
        self.processes.wait()
        return folder

    def _weights_finite(self) -> bool:
        """Every trained parameter is finite (one device sync per step: a flag per tensor, reduced on the device)."""
        with torch.no_grad():
            flags = [torch.isfinite(p).all() for p in self._parameters()]
            return bool(torch.stack(flags).all()) if flags else True

    def _diverged(self, step: int, what: str) -> TrainingDiverged:
        """The one-line error of a diverged run: the step, the learning rate and the checkpoint that is kept."""
        checkpoint = latest_checkpoint(self.run_dir / "checkpoints")
        kept = (f"the last good checkpoint ({checkpoint.name}) is kept: resume from it with a lower --lr" if checkpoint
                else "no checkpoint was written: start again with a lower --lr")
        rate = self.optimizer.param_groups[0]["lr"]
        return TrainingDiverged("--lr", f"a learning rate at which training stays finite ({kept})",
                                f"{rate:g}, which gave {what} at step {step}")

    def _checkpoint_with_time(self, step: int, seconds: float) -> None:
        if step < 1 or not self.processes.is_main:
            return
        path = save_training_checkpoint(
            self.run_dir / "checkpoints", step, self.model, self.optimizer, self.model.config.to_dict(),
            {"stage": self.stage, "seconds": seconds},
        )
        self.log.emit("checkpoint", stage=self.stage, step=step, path=str(path))

    def _progress(self, step: int, start_step: int, started: float, terms: dict[str, float]) -> None:
        elapsed = time.perf_counter() - started
        rate = (step - start_step) / max(elapsed, 1e-9)
        self.log.emit(
            "progress", stage=self.stage, step=step, total=self.config.steps, **terms,
            images_per_s=rate * self.config.batch_size, eta_s=(self.config.steps - step) / max(rate, 1e-9),
            seconds_per_step=self.timer.per_step(),
        )
