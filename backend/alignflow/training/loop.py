"""The training-run skeleton every model of the engine shares: run folder, resume, checkpoints, events, export.

A run writes ``config.json``, ``events.jsonl``, ``checkpoints/`` (resumable) and ``generator/`` (the result) to its
run folder. Subclasses (the image generator's ``Trainer``, the mask generator's ``MaskTrainer``) say what one step
is, what a preview looks like and what gets exported; the loop, the checkpoint cadence, resuming and the event
stream are written once here.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..atomic import atomic_write_json
from ..device import resolve_device
from ..errors import InputError
from .checkpoint import latest_checkpoint, load_training_checkpoint, save_training_checkpoint
from .events import EventLog, Listener

CONFIG_FILE = "config.json"


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

    def __init__(self, config: RunConfig, listeners: list[Listener] | None = None, resume: bool = False):
        config.validate()
        self.config = config
        self.run_dir = Path(config.out)
        self.resume = resume
        self.log = EventLog(self.run_dir, listeners)
        self.device = resolve_device(config.device)
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
        """Train to ``config.steps`` (continuing a checkpoint when resuming) and return the exported folder."""
        config = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.resume and ((self.run_dir / CONFIG_FILE).exists() or (self.run_dir / self.result_folder).exists()):
            raise InputError(self.run_dir, "a new run folder (this one holds a run: add --resume to continue it, or choose another --out)")
        finished = self._finished_result()
        if finished is not None:
            return finished
        try:
            self._prepare()
            start_step, seconds_before = self._maybe_resume()
            atomic_write_json(self.run_dir / CONFIG_FILE, config.to_dict())
            parameters = sum(p.numel() for group in self.optimizer.param_groups for p in group["params"])
            self.log.emit("start", stage=self.stage, step=start_step, total=config.steps, device=str(self.device), parameters=parameters)
            return self._loop(start_step, seconds_before)
        except (InputError, FloatingPointError) as error:
            self.log.emit("error", message=str(error))
            raise
        except Exception as error:  # readers of events.jsonl (plugin, server) must learn that the run died
            self.log.emit("error", message=f"{type(error).__name__}: {error}")
            raise

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
        step = start_step
        try:
            for step in range(start_step + 1, config.steps + 1):
                self.optimizer.zero_grad(set_to_none=True)
                terms = self._step()
                self.optimizer.step()
                self.timer.count += 1
                if not all(math.isfinite(v) for v in terms.values()):
                    raise FloatingPointError(f"training diverged at step {step}: {terms}")
                if step % config.log_every == 0 or step == config.steps:
                    self._progress(step, start_step, started, terms)
                if step % config.checkpoint_every == 0 or step == config.steps:
                    self._checkpoint_with_time(step, seconds_before + time.perf_counter() - started)
                if step % config.preview_every == 0 or step == config.steps:
                    self._write_preview(step)
        except KeyboardInterrupt:
            self._checkpoint_with_time(step - 1, seconds_before + time.perf_counter() - started)
            self.log.emit("error", message=f"interrupted at step {step}; resume with --resume")
            raise
        seconds = seconds_before + time.perf_counter() - started
        folder = self._export(config.steps, seconds)
        summary = {
            "stage": self.stage, "steps": config.steps, "seconds": seconds,
            "seconds_per_step": self.timer.per_step(), "peak_memory_mb": peak_memory_mb(self.device),
            self.result_folder: str(folder),
        }
        atomic_write_json(self.run_dir / "summary.json", summary)
        self.log.emit("done", **summary)
        return folder

    def _checkpoint_with_time(self, step: int, seconds: float) -> None:
        if step < 1:
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
