"""Load on the job server (issue 6): N clients poll a job's status while it trains; does the server keep
answering (latency percentiles) and how much does the training slow down?

Runs `alignflow serve` on loopback (its own process, one CPU slot), trains the mask generator on 4 real Kvasir-SEG
pairs three times: alone, with N pollers, alone again (the spread of the two lone runs is the machine's noise),
and prints the training seconds (the run's summary.json) and the poll latencies. Usage:

    OMP_NUM_THREADS=1 ALIGNFLOW_SHARED=../shared python benchmarks/server_load.py [--clients 50] [--interval 0.2] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from alignflow.runners.remote import RemoteRunner

SHARED = Path(os.environ.get("ALIGNFLOW_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TOKEN = "benchmark-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(root: Path, port: int) -> subprocess.Popen:
    token_file = root / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    server = subprocess.Popen([sys.executable, "-m", "alignflow.cli", "serve", "--port", str(port), "--token-file", str(token_file),
                               "--data-root", str(root / "server"), "--gpus", "cpu"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    for _ in range(300):
        try:
            if requests.get(f"http://127.0.0.1:{port}/server", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=1).ok:
                return server
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (its own threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def train_once(runner: RemoteRunner, config: dict, clients: int, interval: float, server_pid: int) -> dict:
    server_cpu, client_cpu, wall = cpu_seconds(server_pid), time.process_time(), time.monotonic()
    job = runner.submit("train-masks", config)
    latencies: list[float] = []
    errors = [0]
    stop = threading.Event()

    def poll() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        while not stop.is_set():
            started = time.perf_counter()
            try:
                session.get(f"{runner.url}/jobs/{job}", timeout=30).raise_for_status()
                latencies.append(time.perf_counter() - started)
            except requests.RequestException:
                errors[0] += 1
            stop.wait(interval)

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    while not runner.status(job).finished:
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()
    status = runner.status(job)
    assert status.state == "succeeded", status
    summary = json.loads((Path(status.run_dir) / "summary.json").read_text())
    return {"train_s": summary["seconds"], "latencies": latencies, "errors": errors[0], "wall_s": time.monotonic() - wall,
            "server_cpu_s": cpu_seconds(server_pid) - server_cpu, "client_cpu_s": time.process_time() - client_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between one client's polls")
    parser.add_argument("--steps", type=int, default=300)
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="server-load-"))
    kvasir = SHARED / "data" / "Kvasir-SEG"
    names = sorted(p.name for p in (kvasir / "images").iterdir())[:4]
    for sub in ("images", "masks"):
        (root / "data" / sub).mkdir(parents=True)
        for name in names:
            shutil.copy(kvasir / sub / name, root / "data" / sub / name)
    port = free_port()
    server = start_server(root, port)
    try:
        runner = RemoteRunner(f"http://127.0.0.1:{port}", TOKEN)
        config = {"source": str(root / "data"), "steps": options.steps, "batch_size": 4, "device": "cpu", "checkpoint_every": 100,
                  "preview_every": 100000, "generator": {"resolution": 64}}
        alone_1 = train_once(runner, config, 0, options.interval, server.pid)["train_s"]
        run = train_once(runner, config, options.clients, options.interval, server.pid)
        alone_2 = train_once(runner, config, 0, options.interval, server.pid)["train_s"]
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(root, ignore_errors=True)
    alone, loaded, latencies = (alone_1 + alone_2) / 2, run["train_s"], run["latencies"]
    quantiles = statistics.quantiles(latencies, n=100)
    print(f"training {options.steps} steps alone: {alone_1:.1f} s and {alone_2:.1f} s; with {options.clients} clients polling "
          f"every {options.interval} s: {loaded:.1f} s ({100 * (loaded / alone - 1):+.1f}% vs the mean alone)")
    print(f"status polls: {len(latencies)} answered ({len(latencies) / run['wall_s']:.0f}/s), {run['errors']} errors; latency p50 "
          f"{1000 * quantiles[49]:.1f} ms, p99 {1000 * quantiles[98]:.1f} ms, max {1000 * max(latencies):.1f} ms")
    print(f"CPU during the loaded run ({run['wall_s']:.1f} s): server {run['server_cpu_s']:.1f} s, polling clients {run['client_cpu_s']:.1f} s "
          f"(on {os.cpu_count()} cores shared with the training job)")


if __name__ == "__main__":
    main()
