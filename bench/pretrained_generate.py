"""Generation speed of a pretrained Llama (SmolLM2-135M) in Folio and in `transformers`, side by side.

    .venv/bin/python bench/pretrained_generate.py [--model smollm2] [--new-tokens 200] [--threads 1 2]

Both sides load the same GGUF file in float32 (Folio through `LanguageModel.from_pretrained`, transformers
through `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`, which dequantizes the same Q4_1 weights
to the same float32 values) and generate from the same prompt:

* one stream, `--new-tokens` greedy tokens: Folio's `LanguageModel.stream` (its whole generation path: the
  prompt, the key/value cache, detokenization) against transformers' `generate(do_sample=False)`, both with
  the end-of-text token ignored so that both make every token; the tokens must be the same (checked);
* the same greedy stream with prompt-lookup decoding on both sides (`--lookup` tokens guessed from earlier
  in the text and checked in one pass: Folio's `prompt_lookup_num_tokens`, transformers' own option of that
  name), which gains where the text repeats itself (SmolLM2's greedy continuation of "ROMEO:" does);
* `--batch` streams of the same prompt, sampled (temperature 1): aggregate tokens/s;
* peak memory: each side loaded and run in a child process of its own, whose peak RSS is read back.

Timings alternate the two sides at each thread count (`--threads`): transformers runs with that many
threads, Folio with its own choice for one stream (the faster of one thread and that many, timed over the
first steps: `folio.runtime.on_faster_threads`) and that many for the batch. The machine may be shared, so compare the ratio (the same run, the same load)
rather than the absolute figures; "best against best" takes each side's fastest setting. The last line is one
JSON object.

Why the one-stream ratio stays near 1: a step reads every weight once (538 MB in float32) for one row of
arithmetic, so memory bandwidth, the same for both, bounds it. The 211 matrix-vector products of a step
alone take about 48 ms on the 2-core machine of bench/RESULTS.md (11 GB/s, with one thread or two), out of
the ~64 ms either side takes; Folio's smaller per-step overhead (fused projections, a preallocated cache,
fewer operations) shows as a few percent. Prompt lookup, which checks several tokens per read of the weights,
is the lever that moves the figure, and transformers has it too.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from folio.models.llama_weights import pretrained_path
from folio.runtime import threads
from folio.tasks.lm import LanguageModel


def load_transformers(source: str):
    import transformers

    transformers.logging.set_verbosity_error()
    path = pretrained_path(source)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # every stream makes all its tokens, as Folio's below
    return model


def folio_generate(lm: LanguageModel, prompt: str, new_tokens: int, batch: int = 1, lookup: int | None = None) -> float:
    """Seconds for `new_tokens` tokens per stream through `LanguageModel.stream` (greedy for one stream)."""
    options = dict(top_k=1, prompt_lookup_num_tokens=lookup) if batch == 1 else dict(temperature=1.0, seed=0)
    start = time.perf_counter()
    steps = sum(1 for _ in lm.stream(prompt, new_tokens, num_samples=batch, stop_at_eos=False, **options))
    seconds = time.perf_counter() - start
    assert steps >= new_tokens, steps
    return seconds


@torch.inference_mode()
def folio_greedy_ids(lm: LanguageModel, prompt: str, new_tokens: int) -> list[int]:
    """The greedy token ids of Folio's generation loop (the same one `stream` runs)."""
    from folio.decoding.sampling import generate_tokens

    ids = lm._prompt_ids(prompt)[None]
    logits, state = lm.model(ids, last_only=True)

    def step(tokens, state):
        logits, state = lm.model(tokens[:, None], state)
        return logits[:, -1], state

    return [int(t) for t in generate_tokens(step, logits[:, -1], state, new_tokens, top_k=1)]


@torch.inference_mode()
def transformers_generate(model, ids: torch.Tensor, new_tokens: int, batch: int = 1, lookup: int | None = None,
                          eos_id: int | None = None) -> tuple[float, list[int]]:
    ids = ids.expand(batch, -1)
    options = dict(do_sample=False) if batch == 1 else dict(do_sample=True, temperature=1.0, top_k=0)
    if lookup:  # transformers' prompt lookup needs an end-of-text id (min_new_tokens keeps it from ending early)
        options.update(prompt_lookup_num_tokens=lookup, eos_token_id=eos_id)
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         pad_token_id=0, **options)
    seconds = time.perf_counter() - start
    made = out[0, ids.size(1) :].tolist()
    if not lookup:  # (assisted generation may stop a few tokens short or past: its time is scaled to new_tokens)
        assert len(made) == new_tokens, len(made)
    return seconds * new_tokens / len(made), made


def peak_memory(side: str, args) -> float:
    """MiB: the peak RSS of a child process that loads one side and generates 20 tokens."""
    command = [sys.executable, __file__, "--memory-of", side, "--model", args.model, "--prompt", args.prompt]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def memory_child(args) -> None:
    if args.memory_of == "folio":
        lm = LanguageModel.from_pretrained(args.model)
        folio_generate(lm, args.prompt, 20)
    else:
        transformers_generate(load_transformers(args.model), torch.tensor([[1, 2, 3]]), 20)
    print(peak_rss_mib())


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: /proc's VmHWM (ru_maxrss would include the parent's, as it
    is kept across exec), else ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 * 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="smollm2, a .gguf file (transformers must read it too)")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--lookup", type=int, default=10, help="prompt lookup: tokens guessed at a time (0: skip)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--memory-of", choices=["folio", "transformers"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        return memory_child(args)

    lm = LanguageModel.from_pretrained(args.model)
    reference = load_transformers(args.model)
    ids = lm._prompt_ids(args.prompt)[None]  # (1, P): the same prompt ids on both sides
    result: dict = {"model": args.model, "dtype": "float32", "prompt_tokens": ids.size(1), "new_tokens": args.new_tokens,
                    "batch": args.batch, "machine_threads": torch.get_num_threads()}
    ours = folio_greedy_ids(lm, args.prompt, args.new_tokens)
    theirs = transformers_generate(reference, ids, args.new_tokens)[1]
    result["same_tokens"] = ours == theirs
    print(f"greedy tokens identical: {result['same_tokens']} ({args.new_tokens} tokens; text: "
          f"{lm.vocab.decode(ours)[:60]!r}...)")
    for count in args.threads:
        with threads(count):
            folio_generate(lm, args.prompt, 5), transformers_generate(reference, ids, 5)  # warm-up
            folio_s = folio_generate(lm, args.prompt, args.new_tokens)
            theirs_s = transformers_generate(reference, ids, args.new_tokens)[0]
            if args.lookup:
                folio_lookup_s = folio_generate(lm, args.prompt, args.new_tokens, lookup=args.lookup)
                theirs_lookup_s, theirs_lookup = transformers_generate(reference, ids, args.new_tokens, lookup=args.lookup,
                                                                       eos_id=lm.vocab.eos_id)
                result["same_tokens_lookup"] = theirs_lookup[: len(ours)] == ours[: len(theirs_lookup)]
            folio_batch_s = folio_generate(lm, args.prompt, args.new_tokens, args.batch)
            theirs_batch_s = transformers_generate(reference, ids, args.new_tokens, args.batch)[0]
        row = {"folio_tokens_per_s": args.new_tokens / folio_s, "transformers_tokens_per_s": args.new_tokens / theirs_s,
               "ratio": theirs_s / folio_s,
               "folio_batch_tokens_per_s": args.batch * args.new_tokens / folio_batch_s,
               "transformers_batch_tokens_per_s": args.batch * args.new_tokens / theirs_batch_s}
        if args.lookup:
            row.update(folio_lookup_tokens_per_s=args.new_tokens / folio_lookup_s,
                       transformers_lookup_tokens_per_s=args.new_tokens / theirs_lookup_s,
                       lookup_ratio=theirs_lookup_s / folio_lookup_s, folio_lookup_over_transformers=theirs_s / folio_lookup_s)
        result[f"threads_{count}"] = {k: round(v, 2) for k, v in row.items()}
        print(f"{count} thread(s): one stream: Folio {row['folio_tokens_per_s']:.1f} tokens/s, transformers "
              f"{row['transformers_tokens_per_s']:.1f} tokens/s, ratio {row['ratio']:.2f}; {args.batch} streams: Folio "
              f"{row['folio_batch_tokens_per_s']:.1f} tokens/s, transformers {row['transformers_batch_tokens_per_s']:.1f}")
        if args.lookup:
            print(f"  prompt lookup ({args.lookup}): Folio {row['folio_lookup_tokens_per_s']:.1f} tokens/s, transformers "
                  f"{row['transformers_lookup_tokens_per_s']:.1f} tokens/s, ratio {row['lookup_ratio']:.2f}; Folio with "
                  f"lookup / transformers' plain generate {row['folio_lookup_over_transformers']:.2f}")
    best = {side: max(result[f"threads_{n}"][f"{side}_tokens_per_s"] for n in args.threads) for side in ("folio", "transformers")}
    result["best_ratio"] = round(best["folio"] / best["transformers"], 2)
    print(f"best against best: Folio {best['folio']:.1f} tokens/s, transformers {best['transformers']:.1f}: "
          f"{result['best_ratio']:.2f}x")
    if not args.no_memory:
        result["peak_rss_mib"] = {side: round(peak_memory(side, args)) for side in ("folio", "transformers")}
        print(f"peak RSS (load + 20 tokens, a process each): Folio {result['peak_rss_mib']['folio']} MiB, "
              f"transformers {result['peak_rss_mib']['transformers']} MiB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
