"""Inference throughput of a trained `folio classify` model: reviews per second at batch 64 on CPU.

    python bench/classify_speed.py runs/imdb [--batch-size 64] [--reviews 2000] [--threads 2]

Scores the first N held-out IMDb test reviews (raw strings: cleaning and encoding included, as
`folio classify predict` does) and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from folio.data.reviews import imdb_splits
from folio.tasks.classify import TextClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reviews", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clf = TextClassifier.from_pretrained(args.model, device="cpu")
    texts = imdb_splits()["test"].texts[: args.reviews]
    clf.predict(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    start = time.perf_counter()
    clf.predict(texts, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    print(json.dumps({"model": args.model, "reviews": len(texts), "batch_size": args.batch_size,
                      "threads": torch.get_num_threads(), "seconds": round(seconds, 2),
                      "reviews_per_s": round(len(texts) / seconds, 1)}))


if __name__ == "__main__":
    main()
