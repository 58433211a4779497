"""Training speed of the book's character model: a straightforward `nn.GRU` loop against Folio.

The model (the book's): 2-layer GRU, hidden 128, dropout 0.2 between layers, one-hot(-equivalent)
input, Linear(128 → vocabulary) head, cross-entropy; batch 32 windows of 100 characters.

* plain: F.one_hot → nn.GRU(V, 128, 2, dropout=0.2, batch_first=True) → Linear → cross-entropy → Adam,
  in this process, with torch's default threads (both cores).
* folio, 1 process: `folio lm train` (FastGRU, AdamW, clipping, the real training loop), batch 32.
* folio, 2 processes: the same command under `torchrun --nproc_per_node=2`, 16 windows per process
  (the same global batch of 32 and the same maths: gradients are averaged over both halves), one thread
  each — Folio's recipe for a 2-core CPU.

All three train on the same corpus and alternate --repeats times; each reports characters/s over the
timed steps (the first logging window, warm-up, is excluded), and the median of each is printed with
the ratios to plain. The last line is JSON.

    .venv/bin/python bench/lm_speed.py [--corpus PATH] [--steps 120] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from folio.data.corpora import load_corpus
from folio.data.windows import RandomWindows
from folio.tokenizers import CharTokenizer

HIDDEN, LAYERS, DROPOUT, BATCH, WINDOW = 128, 2, 0.2, 32, 100
FOLIO = [sys.executable, "-m", "folio.cli"]


def plain_rate(ids: torch.Tensor, vocab_size: int, steps: int, warmup: int = 10) -> float:
    torch.manual_seed(0)
    gru = nn.GRU(vocab_size, HIDDEN, LAYERS, dropout=DROPOUT, batch_first=True)
    head = nn.Linear(HIDDEN, vocab_size)
    opt = torch.optim.Adam([*gru.parameters(), *head.parameters()], lr=2e-3)
    data = RandomWindows(ids, WINDOW, BATCH, seed=0)
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        batch = data.batch(0, i)
        out, _ = gru(F.one_hot(batch.inputs, vocab_size).float())
        loss = F.cross_entropy(head(out).reshape(-1, vocab_size), batch.targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
    return steps * BATCH * WINDOW / (time.perf_counter() - start)


def folio_rate(corpus: Path, steps: int, processes: int, log_every: int = 20) -> float:
    with tempfile.TemporaryDirectory() as out:
        launcher = FOLIO if processes == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", "folio.cli"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if processes > 1 else dict(os.environ)
        subprocess.run(
            [*launcher, "lm", "train", "--corpus", str(corpus), "--out", out, "--batch-size", str(BATCH // processes),
             "--seq-len", str(WINDOW), "--hidden", str(HIDDEN), "--layers", str(LAYERS), "--dropout", str(DROPOUT),
             "--max-steps", str(steps + log_every), "--log-every", str(log_every), "--eval-every", "1000000",
             "--save-every", "1000000", "--sample-temperatures", "--quiet", "--device", "cpu"],
            check=True, env=env, stdout=subprocess.DEVNULL,
        )
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        windows = [r["tokens_per_s"] for r in records if r.get("kind") == "train"][1:]  # first window = warm-up
        return statistics.median(windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="shakespeare", help="shakespeare, tinyshakespeare or a file")
    parser.add_argument("--steps", type=int, default=120, help="timed training steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    text = load_corpus(args.corpus)[:1_000_000]
    vocab = CharTokenizer.fit(text)
    ids = vocab.encode_tensor(text)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text(text, encoding="utf-8")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
              f"vocabulary {len(vocab)}, batch {BATCH} x {WINDOW} characters, {args.steps} timed steps")
        rates: dict[str, list[float]] = {"plain": [], "folio_1proc": [], "folio_2proc": []}
        for repeat in range(args.repeats):
            rates["plain"].append(plain_rate(ids, len(vocab), args.steps))
            rates["folio_1proc"].append(folio_rate(corpus, args.steps, 1))
            rates["folio_2proc"].append(folio_rate(corpus, args.steps, 2))
            print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()) + " chars/s",
                  flush=True)
    median = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "plain_chars_per_s": round(median["plain"]),
        "folio_1proc_chars_per_s": round(median["folio_1proc"]),
        "folio_2proc_chars_per_s": round(median["folio_2proc"]),
        "ratio_1proc": round(median["folio_1proc"] / median["plain"], 3),
        "ratio_2proc": round(median["folio_2proc"] / median["plain"], 3),
    }
    print(f"median chars/s: plain {result['plain_chars_per_s']:,}, folio 1 process {result['folio_1proc_chars_per_s']:,} "
          f"({result['ratio_1proc']:.2f}x), folio 2 processes {result['folio_2proc_chars_per_s']:,} ({result['ratio_2proc']:.2f}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
