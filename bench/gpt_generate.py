"""Key/value-cache generation speed of a character GPT on CPU, against re-running the whole text.

    .venv/bin/python bench/gpt_generate.py [--model DIR] [--length 1000]

Both loops are greedy and start from the same one-character prompt, so they must produce the same
tokens (checked). Without --model, a freshly initialised GPT the size of bench/gpt_quality.sh's (4 blocks,
width 192, 6 heads) with a 1,024-position context is timed: speed does not depend on the weights, and a
context longer than the generated text keeps the cache from sliding.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from folio.models.gpt import GPT, GPTConfig
from folio.runtime import threads
from folio.tasks.lm import LanguageModel


@torch.inference_mode()
def cached(model: GPT, length: int) -> torch.Tensor:
    ids = torch.zeros(1, 1, dtype=torch.long)
    logits, state = model(ids)
    out = [ids]
    for _ in range(length):
        nxt = logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
        out.append(nxt)
        logits, state = model(nxt, state)  # one position of work
    return torch.cat(out, 1)


@torch.inference_mode()
def uncached(model: GPT, length: int) -> torch.Tensor:
    ids = torch.zeros(1, 1, dtype=torch.long)
    for _ in range(length):
        window = ids[:, -model.config.context :]
        nxt = model(window)[0][:, -1].argmax(-1, keepdim=True)  # the whole window again
        ids = torch.cat([ids, nxt], 1)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.model:
        model = LanguageModel.from_pretrained(args.model).model
        if not isinstance(model, GPT):
            parser.error(f"{args.model} is not a GPT")
    else:
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=65, layers=4, heads=6, hidden=192, context=1024, dropout=0.0)).eval()
    with threads(args.threads):
        cached(model, 20), uncached(model, 20)  # warm-up
        start = time.perf_counter()
        fast = cached(model, args.length)
        fast_s = time.perf_counter() - start
        start = time.perf_counter()
        slow = uncached(model, args.length)
        slow_s = time.perf_counter() - start
    same = torch.equal(fast, slow)
    result = {
        "tokens": args.length, "context": model.config.context, "threads": args.threads,
        "cached_tokens_per_s": round(args.length / fast_s, 1), "uncached_tokens_per_s": round(args.length / slow_s, 1),
        "speedup": round(slow_s / fast_s, 2), "same_tokens": same,
    }
    print(f"{args.length} tokens: with the cache {result['cached_tokens_per_s']:,} tokens/s, re-running the text "
          f"{result['uncached_tokens_per_s']:,} tokens/s, {result['speedup']}x; identical tokens: {same}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
