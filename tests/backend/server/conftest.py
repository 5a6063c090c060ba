"""Fixtures of the server tests: servers on loopback that are stopped (with their jobs) after each test."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverkit import TOKEN, ThreadServer

from alignflow.server.app import ServerSettings


@pytest.fixture()
def make_server(tmp_path):
    servers: list[ThreadServer] = []

    def make(**overrides) -> ThreadServer:
        settings = ServerSettings(**{"data_root": tmp_path / "server", "token": TOKEN, "poll_s": 0.2, **overrides})
        server = ThreadServer(settings).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
        scheduler = server.app.state.scheduler
        for record in scheduler.store.active():
            scheduler.cancel(record.job_id)  # nothing a test started outlives it


@pytest.fixture()
def source(tmp_path, kvasir, make_pairs) -> Path:
    make_pairs(kvasir, tmp_path / "data", 4)
    return tmp_path / "data"
