"""How long ``alignflow --help`` and ``alignflow <cmd> --help`` take, against a bare ``python -c pass``.

The parser must not import torch (or MONAI, numpy, ...): the commands modules import those inside their handlers.
Each command runs in a fresh interpreter ``--repeats`` times; the median wall time is reported, with its ratio to
the bare interpreter's, since on a loaded machine the ratio is the steadier number.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ENTRY = Path(sys.executable).parent / "alignflow"
HEAVY = ("torch", "monai", "numpy", "diffusers", "transformers", "scipy")


def median_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    probe = f"import sys, alignflow.cli; alignflow.cli.build_parser(); print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    heavy = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.strip()
    bare = median_seconds([sys.executable, "-c", "pass"], args.repeats)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {args.repeats} runs each, median")
    print(f"heavy modules imported by building the parser: {heavy}")
    print(f"{'python -c pass':28s} {bare * 1000:7.1f} ms")
    for command in (["--help"], ["generate", "--help"], ["evaluate-segmentation", "--help"], ["serve", "--help"]):
        seconds = median_seconds([str(ENTRY), *command], args.repeats)
        print(f"{'alignflow ' + ' '.join(command):28s} {seconds * 1000:7.1f} ms  ({seconds / bare:.1f}x python -c pass)")


if __name__ == "__main__":
    main()
