"""The local runner on real jobs: a training subprocess that succeeds, one that fails, one that is cancelled."""

import json
import threading
import time

import pytest
from runnerkit import masks_config, wait, wait_for_checkpoint

from alignflow.errors import InputError
from alignflow.runners.base import CANCELLED, FAILED, SUCCEEDED
from alignflow.runners.local import LocalRunner, live_processes_in_group


def test_a_job_runs_in_its_own_process_and_reports_through_its_events(tmp_path, source):
    runner = LocalRunner(tmp_path / "jobs")
    job = runner.submit("train-masks", masks_config(source, tmp_path / "run", 3))
    status = wait(runner, job)
    assert status.state == SUCCEEDED and status.exit_code == 0
    events = runner.events(job)
    assert events[-1]["type"] == "done" and (tmp_path / "run" / "generator").is_dir()
    assert runner.events(job, since=len(events) - 1) == events[-1:]
    assert job in LocalRunner(tmp_path / "jobs").jobs()  # a new client finds the finished job
    assert LocalRunner(tmp_path / "jobs").status(job).state == SUCCEEDED
    runner.cancel(job)  # cancelling a finished job changes nothing
    assert runner.status(job).state == SUCCEEDED


def test_a_failing_job_says_why(tmp_path, source):
    runner = LocalRunner(tmp_path / "jobs")
    job = runner.submit("train-masks", {**masks_config(source, tmp_path / "run", 3), "steps": 0})
    status = wait(runner, job)
    assert status.state == FAILED and status.exit_code == 2 and "steps" in status.message


def test_cancel_stops_the_process_group_and_keeps_a_checkpoint(tmp_path, source):
    runner = LocalRunner(tmp_path / "jobs")
    job = runner.submit("train-masks", {**masks_config(source, tmp_path / "run", 100000)})
    wait_for_checkpoint(runner, job, timeout=120)
    runner.cancel(job)
    status = runner.status(job)
    assert status.state == CANCELLED
    assert (tmp_path / "run" / "checkpoints" / "latest.json").exists()
    pid = json.loads((tmp_path / "jobs" / job / "job.json").read_text())["pid"]
    assert live_processes_in_group(pid) == []  # nothing of the job's process group still runs
    stopped_at = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())["step"]  # SIGINT may add one
    resumed = runner.submit("train-masks", masks_config(source, tmp_path / "run", stopped_at + 2), resume=True)
    assert wait(runner, resumed).state == SUCCEEDED
    assert any(e["type"] == "resume" and e["step"] == stopped_at for e in runner.events(resumed))


def test_a_cancelled_job_is_finished_only_once_its_processes_are_gone(tmp_path, source):
    # A poller (the plugin's) asks for the status while cancel() still waits for the job to checkpoint and exit: it
    # must not see "cancelled" while the job still holds the run folder (a resume then finds the folder locked).
    runner = LocalRunner(tmp_path / "jobs")
    job = runner.submit("train-masks", masks_config(source, tmp_path / "run", 100000))
    wait_for_checkpoint(runner, job, timeout=120)
    pid = json.loads((tmp_path / "jobs" / job / "job.json").read_text())["pid"]
    canceller = threading.Thread(target=runner.cancel, args=(job,))
    canceller.start()
    while not (tmp_path / "jobs" / job / "cancelled").exists():
        time.sleep(0.005)
    while not (status := runner.status(job)).finished:
        time.sleep(0.005)
    assert status.state == CANCELLED
    assert live_processes_in_group(pid) == []
    canceller.join()


def test_events_are_read_incrementally_and_a_half_written_line_waits(tmp_path):
    runner = LocalRunner(tmp_path / "jobs")
    job = runner.submit("train-masks", {"out": str(tmp_path / "run"), "source": str(tmp_path / "none")})
    wait(runner, job)  # fails at once (no dataset) after writing its error event
    events = (tmp_path / "run" / "events.jsonl")
    first = runner.events(job)
    with open(events, "a") as handle:
        handle.write('{"type": "progress", "step": 1}\n{"type": "progr')  # a writer mid-line
    assert runner.events(job, since=len(first)) == [{"type": "progress", "step": 1}]
    with open(events, "a") as handle:
        handle.write('ess", "step": 2}\n')
    assert runner.events(job, since=len(first) + 1) == [{"type": "progress", "step": 2}]
    assert runner.events(job) == [*first, {"type": "progress", "step": 1}, {"type": "progress", "step": 2}]
    assert LocalRunner(tmp_path / "jobs").events(job, since=len(first)) == runner.events(job, since=len(first))


def test_bad_kind_and_missing_job_are_input_errors(tmp_path):
    runner = LocalRunner(tmp_path / "jobs")
    with pytest.raises(InputError, match="kind"):
        runner.submit("rm", {"out": "x"})
    with pytest.raises(InputError, match="out"):
        runner.submit("train", {})
    with pytest.raises(InputError, match="resume"):
        runner.submit("masks", {"out": "x"}, resume=True)
    with pytest.raises(InputError, match="job_id"):
        runner.status("nope")
