"""Data-parallel training under ``accelerate launch``: 2 CPU processes (gloo) against 1 process, on real pairs.

Both runs see the same global batch: every process draws the same global indices, noise, time and condition
dropout (one shared generator state) and evaluates its rows of them, and gradients are averaged before each step.
So the 2-process loss curve is the 1-process one up to float rounding: the mean of two half-batch gradients is
summed in another order than the whole batch's, a difference of about 1e-7 relative per step that AdamW carries on.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignflow.errors import InputError
from alignflow.generator.config import TrainConfig
from alignflow.generator.training import train
from alignflow.runs.events import read_events
from alignflow.runs.loop import Processes, launched_as_main_process

TINY_GENERATOR = {"resolution": 32, "num_layers": 2, "controlnet_layers": 1, "attention_head_dim": 8,
                  "num_attention_heads": 2, "context_tokens": 2, "patch_size": 1}
STEPS = 40
LOSS_RTOL = 1e-5  # measured: largest relative difference 1.7e-7 over 40 steps
LAUNCH_TIMEOUT_S = 240


def settings(source: Path, out: Path) -> dict:
    return {"source": str(source), "out": str(out), "steps": STEPS, "batch_size": 4, "device": "cpu", "checkpoint_every": 4,
            "preview_every": 20, "log_every": 1, "generator": dict(TINY_GENERATOR)}


def losses_by_step(run_dir: Path) -> dict[int, list[float]]:
    found: dict[int, list[float]] = {}
    for event in read_events(run_dir):
        if event["type"] == "progress" and event.get("stage") == 1:
            found.setdefault(event["step"], []).append(event["loss"])
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (torchrun starts each worker in a session of its own: killpg does not reach them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def launch_two_processes(config_file: Path, log: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "alignflow.cli", "train", "--config", str(config_file), *extra]
    with open(log, "ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


def test_each_process_takes_its_rows_of_the_global_batch():
    assert Processes(0, 2).rows(4, "batch_size") == slice(0, 2)
    assert Processes(1, 2).rows(4, "batch_size") == slice(2, 4)
    with pytest.raises(InputError, match="batch_size.*multiple of the number of processes"):
        Processes(1, 2).rows(3, "batch_size")


def test_only_the_launchers_process_0_counts_as_main(monkeypatch):
    for name in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert launched_as_main_process()  # no launcher
    monkeypatch.setenv("RANK", "1")
    assert not launched_as_main_process()
    monkeypatch.setenv("RANK", "0")
    assert launched_as_main_process()


@pytest.mark.slow
def test_two_processes_follow_the_one_process_loss_curve_write_once_and_resume_after_a_kill(tmp_path, kvasir, make_pairs):
    source = tmp_path / "data"
    make_pairs(kvasir, source, 6)
    one = train(TrainConfig(**settings(source, tmp_path / "one")))
    reference = {step: values[0] for step, values in losses_by_step(tmp_path / "one").items()}

    run_dir = tmp_path / "two"
    config_file = tmp_path / "two.json"
    config_file.write_text(json.dumps(settings(source, run_dir)))
    log = tmp_path / "launch.log"
    process = launch_two_processes(config_file, log)
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while not any(e["type"] == "checkpoint" for e in read_events(run_dir)):  # killed once it has a checkpoint
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.02)
    for pid in process_tree(process.pid):  # the launcher and both workers, as a crash or power cut would
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()
    killed_at = max(losses_by_step(run_dir))
    assert killed_at < STEPS and not (run_dir / "generator").exists()

    resumed = launch_two_processes(config_file, log, "--resume")
    assert resumed.wait(LAUNCH_TIMEOUT_S) == 0, log.read_text()[-3000:]

    events = list(read_events(run_dir))
    kinds = [e["type"] for e in events]
    assert kinds.count("start") == 2 and kinds.count("resume") == 1 and kinds.count("done") == 1 and "error" not in kinds
    second_start = [index for index, kind in enumerate(kinds) if kind == "start"][1]
    before = [e["step"] for e in events[:second_start] if e["type"] == "checkpoint"]
    after = [e["step"] for e in events[second_start:] if e["type"] == "checkpoint"]
    resumed_from = next(e["step"] for e in events if e["type"] == "resume")
    assert before == list(range(4, resumed_from + 1, 4))  # each written once, by the main process alone
    assert after == list(range(resumed_from + 4, STEPS + 1, 4))
    assert next(e for e in events if e["type"] == "start")["processes"] == 2
    assert log.read_text().count("generator written to") == 1  # reported by the main process only

    curve = losses_by_step(run_dir)
    assert sorted(curve) == list(range(1, STEPS + 1))
    for step, values in curve.items():  # steps run before the kill and again after the resume: the same values
        for value in values:
            assert value == pytest.approx(reference[step], rel=LOSS_RTOL), (step, value, reference[step])
    ours, theirs = load_file(str(run_dir / "generator" / "model.safetensors")), load_file(str(one / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.allclose(ours[key], theirs[key], atol=1e-4), key
