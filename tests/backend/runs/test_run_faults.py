"""Faults of a training run (issue 18): non-finite weights never reach a checkpoint, a resume keeps the run's
architecture and step count, one process per run folder (a lock with stale-lock recovery), and the leftovers of a
killed run are removed on the next start. Kill -9 cases go through real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from alignflow.cli import main
from alignflow.errors import InputError
from alignflow.runs.checkpoint import latest_checkpoint
from alignflow.runs.events import read_events
from alignflow.runs.loop import TrainingDiverged, TrainingRun

TINY_GENERATOR = {"resolution": 32, "num_layers": 1, "controlnet_layers": 1, "attention_head_dim": 8,
                  "num_attention_heads": 2, "context_tokens": 2, "patch_size": 1}


# ---------------------------------------------------------------------------------------------------- the loop alone
@dataclass
class LineConfig:
    out: str
    steps: int = 4
    batch_size: int = 1
    device: str = "cpu"
    checkpoint_every: int = 1
    preview_every: int = 1000
    log_every: int = 1
    poison_at: int = 3  # the step whose gradient is made infinite

    def validate(self) -> None:
        pass

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Line(nn.Linear):
    """nn.Linear with what the loop's checkpoints ask of a model."""

    def __init__(self):
        super().__init__(3, 1)
        self.config = LineConfig(out="")

    def saved_state_dict(self) -> dict:
        return self.state_dict()

    def load_saved_state_dict(self, state: dict, where: str = "checkpoint") -> None:
        self.load_state_dict(state)


class LineRun(TrainingRun):
    """A real run of the loop (checkpoints, events, resume) on a linear model; its gradient becomes infinite at
    ``poison_at`` the way a too-large step makes it, so the weights the optimizer writes are not finite."""

    stage = "line"

    def _prepare(self) -> None:
        torch.manual_seed(0)
        self.model = Line()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.step_count = 0

    def _step(self) -> dict[str, float]:
        self.step_count += 1
        loss = self.model(torch.ones(1, 3)).pow(2).sum()
        loss.backward()
        if self.step_count + self._start >= self.config.poison_at:
            self.model.weight.grad.fill_(float("inf"))
        return {"loss": loss.item()}

    def _maybe_resume(self) -> tuple[int, float]:
        start, seconds = super()._maybe_resume()
        self._start = start
        return start, seconds

    def _write_preview(self, step: int) -> None:
        pass

    def _export(self, step: int, seconds: float) -> Path:
        folder = self.run_dir / self.result_folder
        folder.mkdir()
        return folder


def test_non_finite_weights_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as error:
        LineRun(LineConfig(out=str(run))).run()
    message = str(error.value)
    assert "step 3" in message and "0.1" in message and "step_0000002" in message and "\n" not in message
    assert latest_checkpoint(run / "checkpoints").name == "step_0000002"  # step 3's weights never written
    from safetensors.torch import load_file

    weights = load_file(str(latest_checkpoint(run / "checkpoints") / "model.safetensors"))
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
    assert not (run / "generator").exists()
    assert [e for e in read_events(run) if e["type"] == "error"][-1]["message"] == message


def test_a_resume_cannot_go_back_to_fewer_steps_than_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    LineRun(LineConfig(out=str(run), steps=3, poison_at=99)).run()
    with pytest.raises(InputError, match="--steps.*at least the 3 steps"):
        LineRun(LineConfig(out=str(run), steps=2, poison_at=99), resume=True).run()


# ---------------------------------------------------------------------------------------------------- real CLI runs
@pytest.fixture(scope="module")
def pairs(tmp_path_factory, kvasir, make_pairs) -> Path:
    root = tmp_path_factory.mktemp("kvasir4")
    make_pairs(kvasir, root, 4)
    return root


def train_args(source: Path, out: Path, *extra: str) -> list[str]:
    config = out.parent / f"{out.name}-tiny.json"
    config.write_text(json.dumps({"generator": TINY_GENERATOR}))
    return ["train", "--config", str(config), "--source", str(source), "--out", str(out), "--batch-size", "2",
            "--device", "cpu", "--checkpoint-every", "1", "--preview-every", "1000", *extra]


def last_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1] if lines else ""


def test_an_infinite_or_diverging_learning_rate_is_one_line_and_leaves_no_generator(tmp_path, pairs, capsys):
    code = main(train_args(pairs, tmp_path / "inf", "--lr", "inf", "--steps", "1"))
    assert code == 2 and "lr" in last_error(capsys) and not (tmp_path / "inf").exists()  # refused before anything is written
    code = main(train_args(pairs, tmp_path / "huge", "--lr", "1e300", "--steps", "2"))
    line = last_error(capsys)
    assert code == 2 and line.startswith("alignflow train: error: --lr") and "step 1" in line and "1e+300" in line, line
    assert not (tmp_path / "huge" / "generator").exists() and latest_checkpoint(tmp_path / "huge" / "checkpoints") is None
    # 1e37: the first update fits float32, the next forward pass does not (the "divergence at --lr 1e6", sooner)
    code = main(train_args(pairs, tmp_path / "diverged", "--lr", "1e37", "--steps", "4"))
    line = last_error(capsys)
    assert code == 2 and line.startswith("alignflow train: error: --lr") and "1e+37" in line and "at step" in line, line
    assert not (tmp_path / "diverged" / "generator").exists()
    # Nothing but a failed start is in the folder: the corrected run may start there without --resume.
    assert main(train_args(pairs, tmp_path / "huge", "--steps", "1")) == 0


def test_resume_keeps_the_architecture_and_the_step_count(tmp_path, pairs, capsys):
    run = tmp_path / "run"
    assert main(train_args(pairs, run, "--steps", "2", "--resolution", "32")) == 0
    capsys.readouterr()
    assert main(train_args(pairs, run, "--steps", "1", "--resume")) == 2
    line = last_error(capsys)
    assert "--steps" in line and "2 steps" in line, line
    assert main(train_args(pairs, run, "--steps", "3", "--resume", "--resolution", "64")) == 2
    line = last_error(capsys)
    assert "generator.resolution" in line and "32" in line and "64" in line, line
    # --resume alone continues the run as it was started (its stored options), here to 3 steps
    assert main(["train", "--resume", "--out", str(run), "--steps", "3"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 3


def _hold_in_subprocess(code: str, ready: Path) -> subprocess.Popen:
    """A real process that runs ``code`` (which touches ``ready`` when it holds what it should) and then waits."""
    script = textwrap.dedent(code) + f"\nopen({str(ready)!r}, 'w').close()\nimport time\ntime.sleep(600)\n"
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the helper process did not get ready"
        time.sleep(0.05)
    return process


def _kill9(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_one_process_per_run_folder_and_a_dead_holder_is_taken_over(tmp_path, pairs, capsys):
    run = tmp_path / "run"
    holder = _hold_in_subprocess(f"from alignflow.runs.lock import RunLock\nRunLock({str(run)!r}).acquire()", tmp_path / "held")
    try:
        assert main(train_args(pairs, run, "--steps", "1")) == 2
        line = last_error(capsys)
        assert f"held by process {holder.pid}" in line and ".lock" in line, line
        assert not (run / "config.json").exists()
    finally:
        _kill9(holder)
    assert main(train_args(pairs, run, "--steps", "1")) == 0
    warnings = [e["message"] for e in read_events(run) if e["type"] == "warning"]
    assert any(f"lock of process {holder.pid}" in w for w in warnings), warnings
    assert not (run / ".lock").exists()


def test_a_checkpoint_killed_mid_write_is_removed_on_the_next_run(tmp_path, pairs):
    run = tmp_path / "run"
    writer = _hold_in_subprocess(f"""
        from pathlib import Path
        from alignflow.atomic import atomic_directory
        writing = atomic_directory(Path({str(run / 'checkpoints' / 'step_0000001')!r}))
        tmp = writing.__enter__()
        (tmp / "model.safetensors").write_bytes(bytes(1 << 20))
    """, tmp_path / "writing")
    _kill9(writer)
    leftovers = list((run / "checkpoints").glob(".step_0000001.*.tmp"))
    assert len(leftovers) == 1 and f".{writer.pid}@" in leftovers[0].name
    assert main(train_args(pairs, run, "--steps", "1")) == 0
    assert not leftovers[0].exists()
    warnings = [e["message"] for e in read_events(run) if e["type"] == "warning"]
    assert any("removed 1 leftover" in w and leftovers[0].name in w for w in warnings), warnings


def test_another_hosts_lock_is_taken_over_only_once_its_heartbeat_stopped(tmp_path):
    from alignflow.runs.lock import STALE_AFTER_S, RunLock

    lock_file = tmp_path / ".lock"
    lock_file.write_text(json.dumps({"pid": 1, "host": "another-node"}))  # pid 1 runs here, but it is not that process
    with pytest.raises(InputError, match="held by process 1 on another-node"):
        RunLock(tmp_path).acquire()
    old = time.time() - STALE_AFTER_S - 60
    os.utime(lock_file, (old, old))
    with RunLock(tmp_path) as lock:
        assert lock.stale["host"] == "another-node" and json.loads(lock_file.read_text())["pid"] == os.getpid()
    assert not lock_file.exists()
