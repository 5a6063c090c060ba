"""How responsive napari stays while the Train tab follows a real training subprocess, on a loaded machine.

A 10 ms QTimer records how late each tick fires (event-loop delay), first with nothing running, then while the panel
runs a stage-1 job (the default compact generator at 64 px on real Kvasir pairs, a loss point every step and a
preview every 5 steps: the most UI work per second a run asks for) and polls its events every second. ``--load N``
starts N busy-looping processes beside it (a loaded 2-core machine: another CPU job beside napari and the training).

The UI thread's own work is timed too (the panel applying news, the loss plot's updates,
the preview's updates), and each stall over 100 ms is attributed to what ran on the UI thread during it.
``--preview-layer`` also keeps the preview as a napari layer (what "Show preview in viewer" does).

    OMP_NUM_THREADS=1 xvfb-run -a .venv/bin/python benchmarks/plugin_event_loop.py --source ../shared/data/Kvasir-SEG \\
        --seconds 60 --load 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

STALL_MS = 100.0


def measure(app, seconds: float, interval_ms: int = 10) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Lateness of every tick (ms) and the (start, end) times of the late ones."""
    from qtpy.QtCore import QTimer

    lateness: list[float] = []
    stalls: list[tuple[float, float]] = []
    expected = [time.perf_counter() + interval_ms / 1000]

    def tick() -> None:
        now = time.perf_counter()
        late = max(0.0, now - expected[0]) * 1000
        lateness.append(late)
        if late > STALL_MS:
            stalls.append((expected[0], now))
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
    return np.array(lateness), stalls


def summary(lateness: np.ndarray) -> dict[str, float]:
    return {"ticks": len(lateness), "p50_ms": round(float(np.percentile(lateness, 50)), 1),
            "p95_ms": round(float(np.percentile(lateness, 95)), 1), "p99_ms": round(float(np.percentile(lateness, 99)), 1),
            "max_ms": round(float(lateness.max()), 1), "over_100_ms": int((lateness > STALL_MS).sum())}


class Timings:
    """Wall time of chosen UI-thread calls: (name, start, end) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, float]] = []

    def wrap(self, owner: object, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.calls.append((name, start, time.perf_counter()))

        setattr(owner, attribute, timed)

    def totals(self) -> dict[str, dict[str, float]]:
        grouped: dict[str, list[float]] = defaultdict(list)
        for name, start, end in self.calls:
            grouped[name].append((end - start) * 1000)
        return {name: {"calls": len(values), "mean_ms": round(float(np.mean(values)), 1),
                       "max_ms": round(float(np.max(values)), 1)} for name, values in grouped.items()}

    def during(self, stalls: list[tuple[float, float]]) -> dict[str, int]:
        """How many stalls each timed call overlapped (a stall with none of them: the machine, not the panel)."""
        blamed: dict[str, int] = defaultdict(int)
        for start, end in stalls:
            names = {name for name, a, b in self.calls if a < end and b > start}
            for name in names or {"(none of the timed calls)"}:
                blamed[name] += 1
        return dict(blamed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="dataset folder with images/ and masks/")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--load", type=int, default=1, help="busy-looping processes started beside napari (0: none)")
    parser.add_argument("--profile", help="write a cProfile of the UI thread while training to this file")
    parser.add_argument("--preview-layer", action="store_true",
                        help="also keep the preview as a napari layer (the tab's 'Show preview in viewer')")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_alignflow.widgets.training import TrainingWidget

    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        viewer = napari.Viewer(show=True)
        app = QApplication.instance()
        widget = TrainingWidget(viewer)
        viewer.window.add_dock_widget(widget)
        timings = Timings()
        timings.wrap(widget, "_apply", "panel applies the news")
        timings.wrap(widget, "_show_preview", "preview layer update")
        timings.wrap(widget.plot, "redraw", "loss plot update")
        idle, _ = measure(app, 10.0)

        work = Path(tempfile.mkdtemp(prefix="alignflow-eventloop-"))
        options = work / "options.json"
        options.write_text(json.dumps({"generator": {"resolution": 64}, "max_pairs": 64, "log_every": 1,
                                       "preview_every": 5, "checkpoint_every": 100_000}))
        widget.source.setText(args.source)
        widget.out.setText(str(work / "run"))
        widget.config_file.setText(str(options))
        widget.steps.setValue(100_000)
        widget.batch_size.setValue(4)
        widget.device.setCurrentText("cpu")
        widget.start()
        while not widget.plot.points["loss_denoising"][0] or (args.preview_layer and widget.last_preview is None):
            app.processEvents()  # measure while it trains, not while it starts
            time.sleep(0.01)
        if args.preview_layer:
            widget.show_preview_layer()
        timings.calls.clear()
        profile = None
        if args.profile:
            import cProfile

            profile = cProfile.Profile()
            profile.enable()
        training, stalls = measure(app, args.seconds)
        if profile is not None:
            profile.disable()
            profile.dump_stats(args.profile)
        steps = len(widget.plot.points["loss_denoising"][0])
        worker = widget.cancel()
        while worker.is_running or widget.timer.isActive():  # until the panel has seen the job end
            app.processEvents()
            time.sleep(0.05)
        print(json.dumps({"load_processes": args.load, "preview_layer": args.preview_layer, "idle": summary(idle), "while_training": summary(training),
                          "progress_events_seen": steps, "ui_thread_calls": timings.totals(),
                          "stalls_over_100_ms_during": timings.during(stalls)}, indent=1))
        viewer.close()
    finally:
        for process in load:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
