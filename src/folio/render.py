"""Pictures people would rather look at than read: attention heatmaps (matplotlib, no display needed)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from folio.errors import ConfigError

if TYPE_CHECKING:
    import torch


# What the pictures read of a task's result, declared here so that this module, on the ground floor, knows no task:
# `folio.tasks.translate.Translation` and `folio.tasks.caption.Caption` have these fields.
class AttendedTranslation(Protocol):
    attention: torch.Tensor | None  # (target tokens, source tokens)
    source_pieces: list[str]
    target_pieces: list[str]


class AttendedCaption(Protocol):
    text: str
    words: list[str]
    attention: torch.Tensor | None  # (words, grid, grid): where the model looked for each word


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


def plot_translation_attention(translation: AttendedTranslation, path: str | Path) -> None:
    """Heatmap of a translation's attention: target tokens (rows) × source tokens (columns)."""
    if translation.attention is None:
        raise ConfigError("this model has no attention (attention 'none'): there is no map to show")
    weights = translation.attention.numpy()
    rows, cols = weights.shape
    attention_heatmaps([weights], translation.target_pieces[:rows], translation.source_pieces[:cols], path,
                       xlabel="source", ylabel="output")


def plot_bleu_by_length(rows: list[dict], path: str | Path, title: str = "BLEU by source length") -> None:
    """Bar chart of `folio.tasks.translate.metrics.bleu_by_length`'s rows, each bar labelled with its n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([r["source_words"] for r in rows], [r["bleu"] for r in rows], color="#4c72b0")
    for i, r in enumerate(rows):
        ax.annotate(f"n={r['n']}", (i, r["bleu"]), ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("source length (words)")
    ax.set_ylabel("BLEU")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_caption_attention(image: np.ndarray, caption: AttendedCaption, path: str | Path) -> None:
    """The image and, for each word of the caption, where the model looked (`attention_overlays`)."""
    if caption.attention is None:
        raise ConfigError("this caption has no attention weights: describe it with return_attention=True")
    attention_overlays(image, [a.numpy() for a in caption.attention], caption.words, path, title=caption.text)


def explanation_ansi(explanation: dict, color: bool = True) -> str:
    """A classifier's explanation (`TextClassifier.explain`) for a terminal: its label, then the tokens
    coloured green (for the label) or red (against), brighter for larger contributions; without colour,
    each token is followed by its score."""
    scores = explanation["scores"]
    scale = max((abs(s) for s in scores), default=1.0) or 1.0
    pieces = []
    for token, score in zip(explanation["tokens"], scores, strict=True):
        if not color:
            pieces.append(f"{token}({score:+.3f})")
            continue
        level = min(5, int(abs(score) / scale * 5.999))
        # 256-colour cube: green (0, g, 0) or red (r, 0, 0) backgrounds, darkest for the weakest
        code = 16 + (36 * level if score < 0 else 6 * level)
        pieces.append(f"\033[48;5;{code}m\033[97m{token}\033[0m" if level else token)
    head = f"{explanation['label']} ({explanation['probability']:.3f})"
    return head + "\n" + " ".join(pieces)


def explanation_html(explanation: dict) -> str:
    """A classifier's explanation (`TextClassifier.explain`) as an HTML page: each token shaded green (for
    the label) or red (against) by the size of its contribution, its score in the tooltip."""
    scores = explanation["scores"]
    scale = max((abs(s) for s in scores), default=1.0) or 1.0
    spans = []
    for token, score in zip(explanation["tokens"], scores, strict=True):
        alpha = abs(score) / scale
        rgb = "0,160,0" if score >= 0 else "220,0,0"
        spans.append(f'<span title="{score:+.4f}" style="background: rgba({rgb},{alpha:.3f}); padding: 1px 2px">'
                     f"{html.escape(token)}</span>")
    label = html.escape(f"{explanation['label']} ({explanation['probability']:.3f})")
    return ("<!doctype html>\n<meta charset=\"utf-8\">\n<title>folio classify explain</title>\n"
            f"<p><b>{label}</b>: green supports the label, red opposes it (integrated gradients)</p>\n"
            f"<p style=\"line-height: 1.8; font-family: sans-serif\">{' '.join(spans)}</p>\n")
