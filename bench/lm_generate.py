"""Generation speed of the book's 2×GRU(128) character model on CPU.

Folio's incremental generation (one recurrent step per new character, state carried) against the
book's method (re-feed the whole text for every new character), in the same run:

    .venv/bin/python bench/lm_generate.py [--model DIR]

Without --model a freshly initialised model with tiny Shakespeare's 65 characters is used: speed does
not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from folio.models.rnn_lm import RNNLanguageModel, RNNLMConfig
from folio.tasks.lm import LanguageModel
from folio.tokenizers import CharTokenizer

CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def timed(fn, repeats: int = 3) -> float:
    """Best of `repeats` wall-clock seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@torch.inference_mode()
def refeed_generate(lm: LanguageModel, prompt: str, length: int, seed: int = 0) -> str:
    """The book's loop: run the model over the whole text so far for every new character."""
    generator = torch.Generator().manual_seed(seed)
    ids = lm.vocab.encode_tensor(prompt).unsqueeze(0)
    for _ in range(length):
        logits, _ = lm.model(ids)
        probs = logits[0, -1].softmax(-1)
        ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator).view(1, 1)], dim=1)
    return lm.vocab.decode(ids[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=32)
    args = parser.parse_args()
    if args.model:
        lm = LanguageModel.from_pretrained(args.model)
    else:
        torch.manual_seed(0)
        vocab = CharTokenizer(CHARS)
        lm = LanguageModel(RNNLanguageModel(RNNLMConfig(len(vocab), "gru", 2, 128, 0, 0.2)), vocab)
    prompt = "ROMEO:\n"
    results = {"threads": torch.get_num_threads()}

    one = timed(lambda: lm.generate(prompt, args.length, temperature=1.0, seed=0))
    results["folio_chars_per_s_1_stream"] = args.length / one
    many = timed(lambda: lm.generate(prompt, args.length, num_samples=args.streams, seed=0))
    results[f"folio_chars_per_s_{args.streams}_streams"] = args.streams * args.length / many
    print(f"folio incremental, 1 stream:        {results['folio_chars_per_s_1_stream']:>10,.0f} chars/s")
    print(f"folio incremental, {args.streams} streams:      {results[f'folio_chars_per_s_{args.streams}_streams']:>10,.0f} chars/s (aggregate)")
    for length in (100, 500, 1000):
        refeed = timed(lambda n=length: refeed_generate(lm, prompt, n), repeats=1)
        incremental = timed(lambda n=length: lm.generate(prompt, n, seed=0))
        results[f"refeed_chars_per_s_{length}"] = length / refeed
        results[f"incremental_chars_per_s_{length}"] = length / incremental
        print(f"{length:>5} chars: re-feed {length / refeed:>9,.0f} chars/s | incremental {length / incremental:>9,.0f} chars/s"
              f" | {refeed / incremental:6.1f}x")
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in results.items()}))


if __name__ == "__main__":
    main()
