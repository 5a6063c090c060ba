"""Helpers of the server tests: a real job server on loopback (uvicorn in a thread or a subprocess), zips, configs."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import requests
import uvicorn

from alignflow.server.app import ServerSettings, create_app

TOKEN = "test-token-0123456789abcdef"
TINY_MASKS = {"resolution": 32, "num_layers": 1, "attention_head_dim": 8, "num_attention_heads": 2, "context_tokens": 2}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadServer:
    """``create_app`` served by uvicorn in a thread; ``restart`` builds a new app on the same data root and port."""

    def __init__(self, settings: ServerSettings, port: int | None = None):
        self.settings = settings
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = None
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> ThreadServer:
        self.app = create_app(self.settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            self.thread.join(timeout=30)
            self.server = None

    def get(self, path: str, token: str | None = TOKEN, **kwargs) -> requests.Response:
        return requests.get(self.url + path, headers={**_auth(token), **kwargs.pop("headers", {})}, timeout=30, **kwargs)

    def post(self, path: str, token: str | None = TOKEN, **kwargs) -> requests.Response:
        return requests.post(self.url + path, headers={**_auth(token), **kwargs.pop("headers", {})}, timeout=60, **kwargs)


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def dataset_zip(folder: Path, prefix: str = "") -> bytes:
    return zip_bytes({f"{prefix}{file.relative_to(folder).as_posix()}": file.read_bytes()
                      for file in sorted(folder.rglob("*")) if file.is_file()})


def job_config(steps: int) -> dict:
    return {"steps": steps, "batch_size": 2, "device": "cpu", "checkpoint_every": 1, "preview_every": 1000, "generator": TINY_MASKS}


def wait_for(condition, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not met after {timeout} s")


def serve_subprocess(data_root: Path, token_file: Path, port: int, gpus: str = "cpu") -> subprocess.Popen:
    """``alignflow serve`` as its own process (so a test can SIGKILL it); returns once it answers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "alignflow.cli", "serve", "--port", str(port), "--token-file", str(token_file),
                                "--data-root", str(data_root), "--gpus", gpus], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def answers() -> bool:
        assert process.poll() is None, process.stdout.read().decode()
        try:
            return requests.get(f"http://127.0.0.1:{port}/server", headers=_auth(TOKEN), timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(answers, 60, "server answering")
    return process
