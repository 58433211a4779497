"""Training speed of the book's character model: plain `nn.GRU` loop vs Folio's `FastGRU`.

Model: 2-layer GRU, hidden 128, dropout 0.2 between layers, 65-character vocabulary, Linear(128 -> 65)
head, cross-entropy, Adam; batch 32, windows of 100 characters, torch's default thread count.

* plain: one-hot float input via F.one_hot -> nn.GRU(65, 128, 2, dropout=0.2, batch_first=True).
* folio: integer input -> FastGRU(65, 128, 2, dropout=0.2, batch_first=True) (one-hot read as indices).

Both train on the same random character windows for the same number of steps (warm-up excluded). The two
are run alternately --repeats times and the median characters/s of each is reported, to beat noise
from other processes. The last line is JSON: {"plain_chars_per_s": ..., "folio_chars_per_s": ..., "ratio": ...}.

    .venv/bin/python bench/lm_speed.py [--steps 40] [--repeats 5] [--warmup 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

try:
    import folio  # noqa: F401
except ImportError:  # not installed yet: use the repository's src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from folio.nn.gru import FastGRU

VOCAB, HIDDEN, LAYERS, DROPOUT, BATCH, WINDOW = 65, 128, 2, 0.2, 32, 100


class CharModel(nn.Module):
    def __init__(self, gru_cls: type[nn.GRU]):
        super().__init__()
        self.gru = gru_cls(VOCAB, HIDDEN, LAYERS, dropout=DROPOUT, batch_first=True)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out)


def make_trainer(kind: str, data: torch.Tensor):
    """Returns step(i) that trains one batch; data is (N, WINDOW + 1) character windows."""
    torch.manual_seed(0)
    model = CharModel(nn.GRU if kind == "plain" else FastGRU)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def step(i: int) -> float:
        batch = data[(i * BATCH) % (len(data) - BATCH) :][:BATCH]
        inputs, targets = batch[:, :-1], batch[:, 1:]
        if kind == "plain":
            inputs = F.one_hot(inputs, VOCAB).float()
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step


def timed(step, first: int, steps: int) -> float:
    start = time.perf_counter()
    for i in range(first, first + steps):
        step(i)
    return steps * BATCH * WINDOW / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="alternating runs of each loop")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before the first repeat")
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(1234)
    data = torch.randint(0, VOCAB, (4096, WINDOW + 1), generator=gen)  # random characters
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH} x {WINDOW} chars")
    trainers = {kind: make_trainer(kind, data) for kind in ("plain", "folio")}
    for step in trainers.values():
        for i in range(args.warmup):
            step(i)
    rates: dict[str, list[float]] = {kind: [] for kind in trainers}
    position = args.warmup
    for repeat in range(args.repeats):
        for kind, step in trainers.items():
            rates[kind].append(timed(step, position, args.steps))
        position += args.steps
        print(
            f"repeat {repeat + 1}/{args.repeats}: plain {rates['plain'][-1]:,.0f} chars/s, "
            f"folio {rates['folio'][-1]:,.0f} chars/s",
            flush=True,
        )
    plain, folio_rate = statistics.median(rates["plain"]), statistics.median(rates["folio"])
    print(f"median: plain {plain:,.0f} chars/s, folio {folio_rate:,.0f} chars/s, ratio {folio_rate / plain:.2f}x")
    print(json.dumps({"plain_chars_per_s": round(plain), "folio_chars_per_s": round(folio_rate), "ratio": round(folio_rate / plain, 3)}))


if __name__ == "__main__":
    main()
