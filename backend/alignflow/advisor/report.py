"""The advisor's outputs: JSON report, k-curve plot, thumbnail sheet of picks and outliers, reference list, summary.

Figures use matplotlib's object API with the Agg canvas and never pyplot, so drawing them inside napari (which
owns a Qt event loop and may have chosen a matplotlib backend) changes no global state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image as PILImage

from alignflow.atomic import atomic_write_json, atomic_write_text
from alignflow.data import read_image
from alignflow.plotting import save_png

if TYPE_CHECKING:  # annotations only: advise.py writes its report through this module
    from alignflow.advisor.advise import Advice, ImageSet

REPORT_FILE = "advice.json"
CURVE_FILE = "k_curve.png"
SHEET_FILE = "picks_and_outliers.png"
REFERENCES_FILE = "references.json"  # a plain JSON list of the picked files, for TrainConfig.references
REFERENCES_TEXT_FILE = "references.txt"  # one per line, for the shell: alignflow align --references $(cat ...)
THUMBNAIL_SIDE = 160
SHEET_COLUMNS = 8
MAX_PICKS_SHOWN = 24


def write_report(advice: Advice, images: ImageSet, out: Path) -> None:
    """Write every output into ``out`` (atomically, file by file) and record their names in ``advice.files``."""
    advice.files = {"report": REPORT_FILE, "plot": CURVE_FILE, "thumbnails": SHEET_FILE,
                    "references": REFERENCES_FILE, "references_text": REFERENCES_TEXT_FILE}
    plot_k_curve(advice, out / CURVE_FILE)
    thumbnail_sheet(advice, images, out / SHEET_FILE)
    atomic_write_text(out / REFERENCES_FILE, json.dumps(advice.references, indent=2) + "\n")
    atomic_write_text(out / REFERENCES_TEXT_FILE, "".join(f"{path}\n" for path in advice.references))
    atomic_write_json(out / REPORT_FILE, advice.to_dict())


def plot_k_curve(advice: Advice, path: Path) -> Path:
    """MMD^2 to the whole target set against k: the picks, random k-subsets (median, 10-90 %), the noise floor."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.8), dpi=120)
    axes = figure.add_subplot()
    chosen = np.asarray(advice.chosen_mmd)
    ks = np.arange(1, len(chosen) + 1)
    positive = chosen > 0  # a log axis: the last picks can reach 0 (the whole set)
    axes.plot(ks[positive], chosen[positive], color="#d62728", lw=2, label="advised picks (first k)")
    grid = [point.k for point in advice.curve]
    low, median, high = (np.array([getattr(point.random, q) for point in advice.curve]) for q in ("low", "median", "high"))
    axes.fill_between(grid, low, high, color="#1f77b4", alpha=0.2, label="random k images, 10-90 %")
    axes.plot(grid, median, color="#1f77b4", marker="o", ms=3, label="random k images, median")
    floor = advice.noise_floor.between_halves
    axes.axhspan(floor.low, floor.high, color="grey", alpha=0.25, label="noise floor: two random halves, 10-90 %")
    axes.axhline(floor.median, color="grey", lw=1, ls="--")
    if advice.enough_k is not None:
        axes.axvline(advice.enough_k, color="black", lw=1, ls=":", label=f"enough: k = {advice.enough_k}")
    axes.plot([advice.k], [max(advice.chosen_mmd[advice.k - 1], floor.low)], "k*", ms=10, label=f"your k = {advice.k}")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("number of references k")
    axes.set_ylabel("MMD² to the whole target set (reward kernel)")
    title = f"{advice.target['count']} target images"
    if advice.shift is not None:
        title += f"; source vs target: {advice.shift.verdict}"
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7, frameon=False, loc="lower left")
    figure.tight_layout()
    save_png(figure, path)
    return path


def _thumbnail(item) -> np.ndarray:
    """The image at its own aspect ratio, at most THUMBNAIL_SIDE on its longer side."""
    image = PILImage.fromarray(item if isinstance(item, np.ndarray) else read_image(item))
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), PILImage.Resampling.BICUBIC)
    return np.asarray(image)


def thumbnail_sheet(advice: Advice, images: ImageSet, path: Path) -> Path:
    """The picks in pick order, then the outliers (criticisms) with their robust z-scores; flagged ones in red."""
    from matplotlib.figure import Figure

    picks = advice.picks[:MAX_PICKS_SHOWN]
    groups = [("advised references" + (f" (first {len(picks)} of {advice.k})" if len(picks) < advice.k else ""),
               [(p["index"], f"#{p['rank']} {p['name']}", "black") for p in picks])]
    if advice.outliers:
        groups.append(("worst explained by the rest (MMD-critic criticisms)",
                       [(o["index"], f"z {o['robust_z']:.1f} {o['name']}", "#d62728" if o["outlier"] else "black")
                        for o in advice.outliers]))
    rows = [math.ceil(len(entries) / SHEET_COLUMNS) for _, entries in groups]
    figure = Figure(figsize=(SHEET_COLUMNS * 1.5, sum(rows) * 1.4 + 0.35 * len(groups)), dpi=110)
    parts = figure.subfigures(len(groups), 1, height_ratios=[r * 1.4 + 0.35 for r in rows], squeeze=False)[:, 0]
    for part, (heading, entries), group_rows in zip(parts, groups, rows):
        part.suptitle(heading, x=0.01, ha="left", fontsize=9, fontweight="bold")
        for slot, axes in enumerate(part.subplots(group_rows, SHEET_COLUMNS, squeeze=False).ravel()):
            axes.axis("off")
            if slot < len(entries):
                index, caption, colour = entries[slot]
                axes.imshow(_thumbnail(images.items[index]))
                axes.set_title(caption[:24], fontsize=6, color=colour)
        part.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=1 - 0.35 / (group_rows * 1.4 + 0.35), wspace=0.05, hspace=0.3)
    save_png(figure, path)
    return path


def format_summary(advice: Advice) -> str:
    """A few lines for the terminal."""
    target = advice.target
    settings = advice.settings
    lines = [f"{target['count']} target images in {target['folder'] or 'the given files'} "
             f"(features: {settings['features_cached']} from the cache, {settings['features_computed']} computed; "
             f"{advice.seconds.get('total', 0):.1f} s)"]
    lines.append(f"advised references (k = {advice.k}): " + ", ".join(p["name"] for p in advice.picks))
    floor = advice.noise_floor.between_halves.median
    if advice.enough_k is None:
        lines.append("enough: no k below the folder size reaches the noise floor (the images differ a lot)")
    else:
        yours = advice.chosen_mmd[advice.k - 1]
        verdict = "within it" if advice.k >= advice.enough_k else f"above it (MMD² {yours:.2g})"
        lines.append(f"how many: {advice.enough_k} picks differ from the whole set no more than two random halves of it "
                     f"differ (noise floor MMD² {floor:.2g}); your k = {advice.k} is {verdict}")
    flagged = [o for o in advice.outliers if o["outlier"]]
    if flagged:
        lines.append(f"outliers ({len(flagged)} with robust z > {settings['outlier_z']}): "
                     + ", ".join(f"{o['name']} (z {o['robust_z']:.1f})" for o in flagged))
    else:
        lines.append("outliers: none stands out (worst explained: "
                     + ", ".join(o["name"] for o in advice.outliers[:3]) + ")" if advice.outliers else "outliers: not asked for")
    if advice.shift is not None:
        shift = advice.shift
        lines.append(f"source vs target: {shift.verdict.upper()} (MMD² {shift.mmd:.3g}, noise floor {shift.noise:.2g}): "
                     f"{shift.explanation}")
    return "\n".join(lines)
