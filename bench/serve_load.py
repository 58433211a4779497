"""Load test of `folio serve` on loopback: first-token latency of streamed generation, classify
throughput with request batching, and N concurrent clients for M seconds against generate and classify
(throughput, p50/p99 latency, failed requests).

    .venv/bin/python bench/serve_load.py [--lm DIR] [--classify DIR] [--clients 8] [--seconds 20]

The server runs as its own process (`folio serve`), the clients as threads here. Without --lm, a
freshly initialised 2×GRU(128) character model is served (the book's; speed does not depend on the
weights); without --classify, a fresh bidirectional GRU classifier with a 20,000-word vocabulary fitted
on the embedded IMDb reviews. The short reviews are Rotten Tomatoes sentences (~20 words).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _serving import start_folio_serve


def _fresh_models(root: Path) -> tuple[Path, Path]:
    import torch

    from folio.data.reviews import imdb_splits
    from folio.models.classifier import ClassifierConfig, RecurrentClassifier
    from folio.models.rnn_lm import RNNLanguageModel, RNNLMConfig
    from folio.tokenizers import CharTokenizer, TextCleaner, WordTokenizer
    from folio.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    vocab = CharTokenizer("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    lm_config = RNNLMConfig(len(vocab), "gru", 2, 128, 0, 0.2)
    save_checkpoint(root / "lm", RNNLanguageModel(lm_config), {"task": "lm", "model": lm_config.to_dict()},
                    write_extras=vocab.save_pretrained)
    cleaner = TextCleaner()
    texts = imdb_splits("imdb")["train"].texts
    words = WordTokenizer.fit(texts, 20_000, 1000, cleaner=cleaner)
    clf_config = ClassifierConfig(vocab_size=len(words), num_classes=2)
    config = {"task": "classify", "model": clf_config.to_dict(), "labels": ["neg", "pos"],
              "text": {"tokenizer": "word", "max_len": 400, **cleaner.to_dict()}}
    save_checkpoint(root / "imdb", RecurrentClassifier(clf_config), config, write_extras=words.save_pretrained)
    return root / "lm", root / "imdb"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _hammer(base: str, clients: int, seconds: float, request) -> dict:
    """`clients` threads calling `request(client)` back to back for `seconds`."""
    latencies, failures, units = [], [], [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker():
        with httpx.Client(base_url=base, timeout=60) as client:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    count = request(client)
                    ok = True
                except Exception as err:  # noqa: BLE001 (a failed request is a figure, not a crash)
                    ok, count = False, 0
                    with lock:
                        failures.append(repr(err)[:200])
                with lock:
                    if ok:
                        latencies.append(time.perf_counter() - start)
                        units[0] += count

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(latencies), "failed": len(failures),
            "requests_per_s": round(len(latencies) / wall, 1), "units_per_s": round(units[0] / wall, 1),
            "p50_ms": round(1000 * _percentile(latencies, 0.5), 1), "p99_ms": round(1000 * _percentile(latencies, 0.99), 1),
            "first_failures": failures[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", default=None)
    parser.add_argument("--classify", default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    from folio.data.reviews import imdb_splits

    short_reviews = imdb_splits("rt")["test"].texts
    with tempfile.TemporaryDirectory() as tmp:
        lm_dir, clf_dir = (Path(args.lm), Path(args.classify)) if args.lm and args.classify else _fresh_models(Path(tmp))
        server, base = start_folio_serve("--model", f"lm={lm_dir}", "--model", f"imdb={clf_dir}",
                                         stderr=subprocess.PIPE, text=True)
        try:
            results = {}
            with httpx.Client(base_url=base, timeout=60) as client:
                firsts = []
                for i in range(30):  # warm, sequential: time from request to the first streamed piece
                    start = time.perf_counter()
                    with client.stream("POST", "/v1/generate", json={"prompt": "ROMEO:", "max_new_tokens": 50,
                                                                     "seed": i}) as response:
                        for line in response.iter_lines():
                            if line.startswith("data:"):
                                firsts.append(time.perf_counter() - start)
                                break
                firsts = firsts[5:]  # the first requests warm the server up
                results["first_token_ms"] = {"p50": round(1000 * _percentile(firsts, 0.5), 2),
                                             "p99": round(1000 * _percentile(firsts, 0.99), 2), "n": len(firsts)}
            print(f"first streamed piece: p50 {results['first_token_ms']['p50']} ms, p99 {results['first_token_ms']['p99']} ms")

            def classify_one(client, counter=[0]):  # noqa: B006 (a shared cursor over the reviews)
                counter[0] += 1
                response = client.post("/v1/classify", json={"texts": [short_reviews[counter[0] % len(short_reviews)]]})
                response.raise_for_status()
                return 1

            def generate_100(client):
                response = client.post("/v1/generate", json={"prompt": "ROMEO:", "max_new_tokens": 100, "stream": False})
                response.raise_for_status()
                return 100

            for name, request, clients in (("classify", classify_one, args.clients * 4), ("generate", generate_100, args.clients)):
                results[name] = _hammer(base, clients, args.seconds, request)
                r = results[name]
                print(f"{name}: {clients} clients, {r['requests']} requests in {r['seconds']} s, {r['requests_per_s']} req/s, "
                      f"{r['units_per_s']} {'reviews' if name == 'classify' else 'characters'}/s, p50 {r['p50_ms']} ms, "
                      f"p99 {r['p99_ms']} ms, failed {r['failed']}")
            print(json.dumps(results))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
