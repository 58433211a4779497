"""Continuous batching in `folio serve`: aggregate tokens/s of N concurrent /v1/generate streams against one.

    .venv/bin/python bench/serve_batching.py [--model smollm2] [--clients 8] [--new-tokens 64] [--rounds 2]

`folio serve --model MODEL` runs as its own process; the clients are threads here, each streaming one sampled
generation of a prompt of its own (temperature 0.8, a seed of its own; one that reaches the end of text early
counts the tokens it made). A token is counted per text event of the stream (a byte-level BPE token that ends inside a UTF-8 character adds
its text to the next event, so this slightly undercounts both sides alike). Rounds alternate one stream and
`--clients` streams, so both see the same load; the ratio is of the best of each. The load average (`uptime`)
is printed before and after: on a shared machine the absolute figures move, the ratio less. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import threading
import time

import httpx
from _serving import start_folio_serve

PROMPTS = ["Once upon a time, in a small village by the sea,", "The history of the printing press begins",
           "Here is a short story about a robot who learns to paint:", "In the morning the market opened and",
           "A recipe for a simple tomato soup:", "The mountain road was steep, and the travellers",
           "Dear diary, today I finally", "The three most important ideas in physics are"]


def _stream(base: str, prompt: str, new_tokens: int, seed: int) -> int:
    """One streamed generation; the count of its text events."""
    body = {"prompt": prompt, "max_new_tokens": new_tokens, "temperature": 0.8, "seed": seed}
    events = 0
    with httpx.stream("POST", base + "/v1/generate", json=body, timeout=600) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.read().decode()}")
        for line in response.iter_lines():
            if line.startswith("data:") and '"text"' in line:
                events += 1
    return events


def _round(base: str, clients: int, new_tokens: int, seed: int) -> tuple[float, int]:
    """`clients` concurrent streams: (seconds from the first request to the last event, tokens)."""
    counts = [0] * clients

    def client(i: int) -> None:
        counts[i] = _stream(base, PROMPTS[i % len(PROMPTS)], new_tokens, seed + i)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, sum(counts)


def _machine() -> dict:
    import torch

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "torch": torch.__version__}


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="the server's intra-op threads (OMP_NUM_THREADS); default: Folio's own choice")
    args = parser.parse_args()
    print("load before:", _load())
    server, base = start_folio_serve("--model", args.model, wait_s=120, stderr=subprocess.DEVNULL,
                                     env={**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})})
    try:
        _round(base, 2, 8, 0)  # warm up: the engine's thread, the kernels
        one, many = [], []
        for r in range(args.rounds):
            for clients, figures in ((1, one), (args.clients, many)):
                seconds, tokens = _round(base, clients, args.new_tokens, 100 * r)
                figures.append(tokens / seconds)
                print(f"round {r}: {clients} stream(s): {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tokens/s")
        result = {"model": args.model, "clients": args.clients, "new_tokens": args.new_tokens, "threads": args.threads,
                  "one_stream_tokens_per_s": round(max(one), 2), "batched_tokens_per_s": round(max(many), 2),
                  "ratio": round(max(many) / max(one), 2), **_machine(), "load_after": _load()}
        print(f"{args.clients} concurrent streams: {result['batched_tokens_per_s']} tokens/s against one stream's "
              f"{result['one_stream_tokens_per_s']}: {result['ratio']}x")
        print("load after:", result["load_after"])
        print(json.dumps(result))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
