"""2-D t-SNE map of source, target and generated image features (the AlignFlow paper's Figure 4), saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from alignflow.errors import InputError

PCA_DIMENSIONS = 50  # the usual reduction before t-SNE: removes noise dimensions and speeds the neighbour search
# Colour and marker per set, so overlapping clouds stay distinguishable.
STYLES = {"source": ("#1f77b4", "o"), "target": ("#d62728", "s"), "generated": ("#2ca02c", "^")}


def tsne_embedding(features: dict[str, torch.Tensor], seed: int = 0) -> dict[str, np.ndarray]:
    """One joint t-SNE of every set's features [N_i, D] -> 2-D points per set (jointly, so the sets are comparable)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    names = list(features)
    stacked = np.concatenate([features[n].detach().cpu().double().numpy() for n in names])
    if stacked.shape[0] < 4:
        raise InputError("embedding", "at least 4 images over all sets for a t-SNE map", str(stacked.shape[0]))
    dimensions = min(PCA_DIMENSIONS, stacked.shape[0] - 1, stacked.shape[1])
    reduced = PCA(n_components=dimensions, random_state=seed).fit_transform(stacked)
    perplexity = min(30.0, (stacked.shape[0] - 1) / 3.0)  # sklearn needs perplexity < N; 30 is its default
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)
    bounds = np.cumsum([0, *(len(features[n]) for n in names)])
    return {name: points[a:b] for name, a, b in zip(names, bounds[:-1], bounds[1:])}


def plot_embedding(points: dict[str, np.ndarray], path: Path | str, title: str) -> Path:
    """Scatter plot of each set in its own colour, written atomically as PNG."""
    from alignflow.plotting import new_figure, save_png

    figure = new_figure(figsize=(6, 5), dpi=120)
    axes = figure.subplots()
    for name, xy in points.items():
        colour, marker = STYLES.get(name, (None, "o"))
        axes.scatter(xy[:, 0], xy[:, 1], s=12, alpha=0.7, label=f"{name} ({len(xy)})", color=colour, marker=marker)
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(loc="best", frameon=False)
    figure.tight_layout()
    return save_png(figure, path)
