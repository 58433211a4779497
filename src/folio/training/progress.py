"""Progress on stderr (steps, loss, throughput, ETA) and the JSONL metrics log."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """One status line, redrawn in place on a terminal and printed as plain lines elsewhere."""

    def __init__(self, enabled: bool = True, stream=None, min_interval: float = 0.5):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.min_interval = min_interval if self.tty else 10.0
        self.last = 0.0

    def update(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < self.min_interval:
            return
        self.last = now
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            self.stream.write(("\n" if self.tty else "") + text + "\n")
            self.stream.flush()
            self.last = 0.0


class MetricsLog:
    """Appends one JSON object per line; rank 0 only."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, **record) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: Path, png_path: Path, title: str = "") -> Path | None:
    """Training and validation loss against wall time, as a PNG."""
    records = read_metrics(metrics_path)
    train = [(r["elapsed"] / 60, r["loss"]) for r in records if r.get("kind") == "train"]
    valid = [(r["elapsed"] / 60, r["valid_loss"]) for r in records if r.get("kind") == "eval"]
    if not train and not valid:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="#9ab", linewidth=1)
    if valid:
        ax.plot(*zip(*valid, strict=True), label="validation loss", color="#c33", marker="o", markersize=3)
        best = min(v for _, v in valid)
        ax.axhline(best, color="#c33", linestyle=":", linewidth=0.8)
        ax.annotate(f"best {best:.3f}", xy=(0.99, best), xycoords=("axes fraction", "data"), ha="right", va="bottom")
    ax.set_xlabel("wall time (minutes)")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title or "training curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return png_path
