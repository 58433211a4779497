"""Beam search throughput: sentences per second for batches of 64 with k=5 (and greedy, for scale) on CPU.

    .venv/bin/python bench/translate_beam_speed.py --model runs/dates [--sentences 512] [--batch-size 64] [--beam-size 5]

The sources are the first --sentences of the model's own test split. Each configuration runs --repeats
times (after one warm-up batch) and the median is reported. The last line is JSON:
{"model": ..., "batch_size": 64, "beam_size": 5, "beam_sentences_per_s": ..., "greedy_sentences_per_s": ..., ...}
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from folio.tasks.translate import DataSpec, Translator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    translator = Translator.from_pretrained(args.model)
    saved = translator.config["data"]
    spec = DataSpec(**{k: v for k, v in saved.items() if k in DataSpec.__dataclass_fields__})
    sources = [s for s, _ in spec.load()["test"][: args.sentences]]
    translator.translate(sources[: args.batch_size], beam_size=args.beam_size, batch_size=args.batch_size, truncate=True)

    def rate(beam: int) -> float:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            translator.translate(sources, beam_size=beam, batch_size=args.batch_size, truncate=True)
            times.append(time.perf_counter() - start)
        return len(sources) / statistics.median(times)

    beam_rate, greedy_rate = rate(args.beam_size), rate(1)
    print(f"{len(sources)} sentences, batch {args.batch_size}, {torch.get_num_threads()} threads: "
          f"beam k={args.beam_size} {beam_rate:,.1f} sentences/s, greedy {greedy_rate:,.1f} sentences/s")
    print(json.dumps({"model": args.model, "data": spec.data, "sentences": len(sources), "batch_size": args.batch_size,
                      "beam_size": args.beam_size, "threads": torch.get_num_threads(),
                      "beam_sentences_per_s": round(beam_rate, 1), "greedy_sentences_per_s": round(greedy_rate, 1)}))


if __name__ == "__main__":
    main()
