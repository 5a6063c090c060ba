"""Helpers of the runner tests (local and SLURM): a tiny mask-generator job and waiting for a job to end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

TINY_MASKS = {"resolution": 32, "num_layers": 1, "attention_head_dim": 8, "num_attention_heads": 2, "context_tokens": 2}


def masks_config(source: Path, out: Path, steps: int) -> dict:
    """A ``train-masks`` job on ``source`` that checkpoints every step (so a cancel always finds one)."""
    return {"source": str(source), "out": str(out), "steps": steps, "batch_size": 2, "device": "cpu",
            "checkpoint_every": 1, "preview_every": 1000, "generator": TINY_MASKS}


def wait(runner: Any, job_id: str, timeout: float = 180.0):
    """The job's final status; fails the test if it is still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = runner.status(job_id)
        if status.finished:
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still running after {timeout} s: {runner.status(job_id)}")


def wait_for_checkpoint(runner: Any, job_id: str, timeout: float = 180.0) -> None:
    """Returns once the running job has written a checkpoint; fails the test if it ends or times out first."""
    deadline = time.monotonic() + timeout
    while not any(event["type"] == "checkpoint" for event in runner.events(job_id)):
        assert time.monotonic() < deadline and not runner.status(job_id).finished, runner.status(job_id)
        time.sleep(0.2)
