"""Real tiny training jobs on a loopback server through RemoteRunner: streaming across a dropped connection,
artifacts (and a full disk), one queue per GPU, cancel and resume, a server killed mid-job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from serverkit import TOKEN, free_port, job_config, serve_subprocess, wait_for

from alignflow.errors import InputError
from alignflow.runners.base import CANCELLED, FAILED, RUNNING, SUCCEEDED
from alignflow.runners.local import live_processes_in_group
from alignflow.runners.remote import RemoteRunner


def client(url: str) -> RemoteRunner:
    return RemoteRunner(url, TOKEN, timeout=10, retries=8, backoff_s=0.2)


def has_event(runner: RemoteRunner, job: str, kind: str) -> bool:
    return any(event["type"] == kind for event in runner.events(job))


def job_pid(data_root: Path, local_id: str) -> int:
    return json.loads((data_root / "processes" / local_id / "job.json").read_text())["pid"]


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: a real 'no space left on device' (needs root, as on the project's machines and CI)."""
    def mount(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("mounting a small tmpfs needs root")
        mounted.append(folder)
        return folder

    mounted: list[Path] = []
    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_job_streams_across_a_server_restart_and_its_artifacts_come_back_whole(make_server, source, tmp_path, tiny_disk):
    server = make_server()
    runner = client(server.url)
    job = runner.submit("train-masks", {"source": str(source), "out": "/not/used", **job_config(6)})
    stream = runner.follow(job, wait=5)
    seen = [next(stream)]
    server.stop()  # the client is disconnected mid-stream ...
    server.start()  # ... and a new server process on the same data root takes over
    seen += list(stream)
    assert seen == runner.events(job) and seen[-1]["type"] == "done"  # every event once, in order
    status = runner.status(job)
    assert status.state == SUCCEEDED and status.exit_code == 0 and status.run_dir.startswith(str(server.settings.data_root))

    fetched = runner.fetch(job, tmp_path / "fetched")
    assert (fetched / "generator" / "model.safetensors").is_file()
    assert (fetched / "events.jsonl").read_text() == (Path(status.run_dir) / "events.jsonl").read_text()
    with pytest.raises(InputError, match="new or empty"):
        runner.fetch(job, fetched)

    # Disk full on the client: a clear error and no half-written folder.
    with pytest.raises(InputError, match="free disk space"):
        runner.fetch(job, tiny_disk("client") / "run")
    assert os.listdir(tmp_path / "client") == []
    # Disk full where the server builds the archive: HTTP 507 with the reason, no partial archive left.
    server.stop()
    server.settings.scratch = tiny_disk("scratch")
    server.start()
    with pytest.raises(InputError, match="507.*full"):
        runner.fetch(job, tmp_path / "second")
    assert os.listdir(tmp_path / "scratch") == [] and not (tmp_path / "second").exists()


def test_one_queue_per_gpu_with_cancel_and_resume(make_server, source):
    server = make_server(gpus=["0", "1"])  # a fake GPU list: the queueing needs no CUDA
    scheduler = server.app.state.scheduler
    runner = client(server.url)
    jobs = [runner.submit("train-masks", {"source": str(source), **job_config(100000)}) for _ in range(3)]
    statuses = [runner.status(job) for job in jobs]
    assert [s.state for s in statuses] == [RUNNING, RUNNING, "queued"]
    assert sorted(s.details["slot"] for s in statuses[:2]) == ["0", "1"]
    for status in statuses[:2]:  # each job sees only its GPU
        pid = job_pid(server.settings.data_root, scheduler.get(status.job_id).local_id)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"CUDA_VISIBLE_DEVICES={status.details['slot']}".encode() in environ

    wait_for(lambda: has_event(runner, jobs[0], "checkpoint"), what="a checkpoint of the first job")
    pid = job_pid(server.settings.data_root, scheduler.get(jobs[0]).local_id)
    runner.cancel(jobs[0])
    assert runner.status(jobs[0]).state == CANCELLED
    assert live_processes_in_group(pid) == []  # nothing of the job's process group still runs
    third = wait_for(lambda: (s := runner.status(jobs[2])).state == RUNNING and s, what="the queued job starting")
    assert third.details["slot"] == statuses[0].details["slot"]  # on the freed GPU

    resumed = runner.resume(jobs[0])
    assert runner.status(resumed).state == "queued"  # both GPUs busy
    with pytest.raises(InputError, match=f"{resumed} is already queued"):
        runner.resume(jobs[0])  # one job per run folder: a second resume of the same run is refused (issue 18)
    runner.cancel(jobs[1])
    wait_for(lambda: has_event(runner, resumed, "resume"), what="the resumed job continuing")
    resume_event = next(e for e in runner.events(resumed) if e["type"] == "resume")
    assert resume_event["step"] >= 1 and runner.status(resumed).run_dir == runner.status(jobs[0]).run_dir
    with pytest.raises(InputError, match="failed or cancelled"):
        runner.resume(resumed)
    for job in (resumed, jobs[2]):
        runner.cancel(job)
    assert {runner.status(job).state for job in runner.jobs()} == {CANCELLED}


@pytest.mark.slow
def test_a_server_killed_mid_job_keeps_every_job(tmp_path, source):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    data_root, port = tmp_path / "server", free_port()
    server = serve_subprocess(data_root, token_file, port)
    runner = client(f"http://127.0.0.1:{port}")
    try:
        job = runner.submit("train-masks", {"source": str(source), **job_config(100000)})
        wait_for(lambda: has_event(runner, job, "checkpoint"), what="a checkpoint")
        before = runner.events(job)
        server.send_signal(signal.SIGKILL)
        server.wait()
        server = serve_subprocess(data_root, token_file, port)
        assert runner.status(job).state == RUNNING  # the job outlived the server and is tracked again
        assert runner.events(job)[: len(before)] == before

        server.send_signal(signal.SIGKILL)
        server.wait()
        local = json.loads(next((data_root / "processes").glob("*/job.json")).read_text())
        os.killpg(local["pid"], signal.SIGKILL)  # the job dies too while no server watches
        wait_for(lambda: subprocess.run(["kill", "-0", str(local["pid"])], capture_output=True).returncode != 0, what="the job gone")
        server = serve_subprocess(data_root, token_file, port)
        status = runner.status(job)
        assert status.state == FAILED and "server was down" in status.message
        latest = json.loads((Path(status.run_dir) / "checkpoints" / "latest.json").read_text())
        resumed = runner.resume(job)
        wait_for(lambda: has_event(runner, resumed, "resume"), what="the resumed job continuing")
        resume_event = next(e for e in runner.events(resumed) if e["type"] == "resume")
        assert resume_event["step"] == latest["step"] >= before[-1]["step"]  # from the last checkpoint on disk: nothing lost
        runner.cancel(resumed)
        assert runner.status(resumed).state == CANCELLED
    finally:
        server.terminate()
        server.wait()
