"""Pictures people would rather look at than read: attention heatmaps (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def attention_heatmaps(
    panels: list[np.ndarray], rows: list[str], cols: list[str], path: str | Path, titles: list[str] | None = None,
    xlabel: str = "attended to", ylabel: str = "output",
) -> None:
    """One heatmap per panel (each (len(rows), len(cols)), weights in [0, 1]), side by side in a grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    per_row = min(n, 4)
    grid_rows = (n + per_row - 1) // per_row
    width, height = max(4, 0.35 * len(cols) + 2), max(3, 0.35 * len(rows) + 1.5)
    fig, axes = plt.subplots(grid_rows, per_row, figsize=(width * per_row, height * grid_rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= n:
            ax.axis("off")
            continue
        image = ax.imshow(panels[index], cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if titles:
            ax.set_title(titles[index])
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.04)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def attention_overlays(
    image: np.ndarray, maps: list[np.ndarray], words: list[str], path: str | Path, title: str | None = None,
) -> None:
    """The image, then one panel per word with that word's attention map (grid × grid, upsampled to the
    image's size, each cell a flat square) laid over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = image.shape[:2]
    panels = len(maps) + 1
    per_row = min(panels, 6)
    grid_rows = (panels + per_row - 1) // per_row
    fig, axes = plt.subplots(grid_rows, per_row, figsize=(2.2 * per_row, 2.4 * grid_rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= panels:
            continue
        ax.imshow(image, extent=(0, width, height, 0))
        if index == 0:
            ax.set_title("image", fontsize=9)
            continue
        weights = maps[index - 1]
        ax.imshow(weights / max(float(weights.max()), 1e-9), cmap="inferno", alpha=0.6, vmin=0, vmax=1,
                  extent=(0, width, height, 0), interpolation="nearest")
        ax.set_title(f"{words[index - 1]} (max {float(weights.max()):.2f})", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
