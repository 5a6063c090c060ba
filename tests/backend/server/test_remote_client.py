"""The client side: retries with backoff against an absent server, what RemoteRunner refuses, the `alignflow remote` CLI."""

from __future__ import annotations

import json
import time

import pytest
from serverkit import TOKEN, free_port, job_config

from alignflow.cli import main
from alignflow.errors import InputError
from alignflow.runners.remote import RemoteError, RemoteRunner


def test_an_unreachable_server_is_retried_with_backoff_then_named():
    url = f"http://127.0.0.1:{free_port()}"
    runner = RemoteRunner(url, TOKEN, timeout=1, retries=3, backoff_s=0.1)
    started = time.monotonic()
    with pytest.raises(RemoteError, match="4 tries"):
        runner.status("x")
    assert time.monotonic() - started >= 0.1 + 0.2 + 0.4  # exponential backoff between the tries


def test_bad_client_input_is_refused_before_any_request(tmp_path):
    with pytest.raises(InputError, match="url"):
        RemoteRunner("gpu-box:8765", TOKEN)
    runner = RemoteRunner(f"http://127.0.0.1:{free_port()}", TOKEN, retries=0)
    with pytest.raises(InputError, match="kind"):
        runner.submit("shell", {})
    with pytest.raises(InputError, match="resume.*job id"):  # server runs are continued by job id, not by folder
        runner.submit("train", {"out": str(tmp_path / "run")}, resume=True)
    (tmp_path / "generator").mkdir()
    with pytest.raises(InputError, match="config.init.*job:ID"):  # models are results of server jobs, not uploads
        runner.submit("align", {"init": str(tmp_path / "generator")})


def test_the_remote_command_submits_and_reports(make_server, source, tmp_path, capsys):
    server = make_server()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"source": str(source), "out": "runs/local", **job_config(2)}))
    common = ["--url", server.url, "--token-file", str(token_file)]

    assert main(["remote", "submit", "train-masks", "--config", str(config), "--follow", *common]) == 0
    job = capsys.readouterr().out.splitlines()[0]
    assert main(["remote", "status", job, *common]) == 0
    assert capsys.readouterr().out.split()[:3] == [job, "train-masks", "succeeded"]
    assert main(["remote", "logs", job, "--since", "1", *common]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["type"] == "done"

    runner = RemoteRunner(server.url, TOKEN)
    assert json.loads(runner.read_file(job, "config.json"))["steps"] == 2  # one file of the server's run folder
    with pytest.raises(InputError, match="HTTP 404"):
        runner.read_file(job, "previews/none.png", retry=False)
    with pytest.raises(InputError, match="inside the job's run folder"):
        runner.read_file(job, "../../jobs.sqlite")

    wrong = tmp_path / "wrong"
    wrong.write_text("x" * 20)
    wrong.chmod(0o600)
    assert main(["remote", "status", "--url", server.url, "--token-file", str(wrong)]) == 2
    assert "HTTP 401" in capsys.readouterr().err
