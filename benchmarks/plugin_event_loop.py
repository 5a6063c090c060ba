"""How responsive napari stays while the Training panel follows a real training subprocess.

A 10 ms QTimer records how late each tick fires (event-loop delay) first with nothing running, then while the panel
runs a stage-1 job (the default compact generator at 64 px on real Kvasir pairs) and polls its events every 500 ms.

    OMP_NUM_THREADS=1 xvfb-run -a .venv/bin/python benchmarks/plugin_event_loop.py --source ../shared/data/Kvasir-SEG
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def measure(app, seconds: float, interval_ms: int = 10) -> np.ndarray:
    from qtpy.QtCore import QTimer

    lateness: list[float] = []
    expected = [time.perf_counter() + interval_ms / 1000]

    def tick() -> None:
        now = time.perf_counter()
        lateness.append(max(0.0, now - expected[0]) * 1000)
        expected[0] = now + interval_ms / 1000

    timer = QTimer()
    timer.setInterval(interval_ms)
    timer.timeout.connect(tick)
    timer.start()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    return np.array(lateness)


def summary(lateness: np.ndarray) -> dict[str, float]:
    return {"ticks": len(lateness), "p50_ms": round(float(np.percentile(lateness, 50)), 1),
            "p95_ms": round(float(np.percentile(lateness, 95)), 1), "p99_ms": round(float(np.percentile(lateness, 99)), 1),
            "max_ms": round(float(lateness.max()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="dataset folder with images/ and masks/")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_alignflow.widgets.training import TrainingWidget

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    idle = measure(app, 10.0)

    work = Path(tempfile.mkdtemp(prefix="alignflow-eventloop-"))
    options = work / "options.json"
    options.write_text(json.dumps({"generator": {"resolution": 64}, "max_pairs": 64, "log_every": 1, "preview_every": 5}))
    widget.source.setText(args.source)
    widget.out.setText(str(work / "run"))
    widget.config_file.setText(str(options))
    widget.steps.setValue(100_000)
    widget.batch_size.setValue(4)
    widget.device.setCurrentText("cpu")
    widget.start()
    while not widget.plot.points["loss_denoising"][0]:  # measure while it trains, not while it starts
        app.processEvents()
        time.sleep(0.01)
    training = measure(app, args.seconds)
    steps = len(widget.plot.points["loss_denoising"][0])
    worker = widget.cancel()
    while worker.is_running or widget.timer.isActive():  # until the panel has seen the job end
        app.processEvents()
        time.sleep(0.05)
    print(json.dumps({"idle": summary(idle), "while_training": summary(training), "progress_events_seen": steps}, indent=1))
    viewer.close()


if __name__ == "__main__":
    main()
