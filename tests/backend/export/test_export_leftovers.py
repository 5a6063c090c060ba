"""What a killed export leaves (its staging folder beside the destination) is removed by the next export, with a
log line (issue 18). The export is killed with SIGKILL in a real subprocess, mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from alignflow.cli import main


def test_a_killed_exports_staging_folder_is_removed_by_the_next_export(tmp_path, kvasir, make_pairs, caplog):
    make_pairs(kvasir, tmp_path / "real", 3)
    out = tmp_path / "exported"
    script = (f"import time\nfrom alignflow.export import export_dataset\n"
              f"export_dataset({str(out)!r}, real={str(tmp_path / 'real')!r}, export_format='folders', "
              f"on_progress=lambda *progress: time.sleep(600))\n")
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (staged := [p for p in tmp_path.glob(".exported.*.tmp") if any((p / "images").glob("*.png"))]):
            assert process.poll() is None and time.monotonic() < deadline, "the export never started writing"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert staged[0].is_dir() and f".{process.pid}@" in staged[0].name  # what kill -9 leaves
    assert main(["export", "--real", str(tmp_path / "real"), "--out", str(out), "--format", "folders"]) == 0
    assert not staged[0].exists() and (out / "manifest.json").is_file()
    # one warning line (on the terminal: Python's last-resort handler prints it to stderr; here pytest records it)
    assert [r.getMessage() for r in caplog.records if "removed" in r.getMessage()] == [
        f"removed {staged[0]}, left over from an interrupted write"]
