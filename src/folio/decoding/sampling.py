"""Temperature, top-k and top-p (nucleus) sampling, and the incremental generation loop.

The loop never re-feeds the text: `step(tokens, state)` runs the model on one new token per sequence
and returns the next logits and the updated state (a recurrent state or a key/value cache).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from folio.errors import ConfigError
from folio.nn import kernels

StepFn = Callable[[Tensor, object], tuple[Tensor, object]]  # (N,) ids, state -> (N, V) logits, state


def check_sampling_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"temperature must be a positive number, got {temperature!r} (use top_k=1 for greedy)")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Scaled logits (N, V) with everything outside the top-k / top-p nucleus set to -inf."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens ranked above it already hold top_p of the mass; the first stays.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def greedy(logits: Tensor) -> Tensor:
    """The index of each row's largest logit (N, V) → (N,): `argmax`'s (the first of equal largest; a NaN where
    a row holds one). On the CPU in float32, Folio's kernel (PyTorch's argmax reads a row of a large vocabulary
    one value at a time: ~50 µs for 49,152)."""
    if logits.dim() == 2 and logits.stride(-1) == 1 and logits.size(-1) > 0 and \
            (library := kernels.for_inputs(logits)) is not None:
        out = torch.empty(logits.size(0), dtype=torch.long)
        if library.folio_argmax_rows(logits.data_ptr(), *logits.shape, logits.stride(0), out.data_ptr()) == 0:
            return out
    return logits.argmax(-1)


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token per row of `logits` (N, V) → (N,)."""
    if top_k == 1:
        return greedy(logits)
    probs = filter_logits(logits.float(), temperature, top_k, top_p).softmax(-1)
    # Inverse-CDF sampling: the same distribution as torch.multinomial at a fraction of its per-call
    # cost, which dominates when generating one character at a time.
    cdf = probs.cumsum(-1)  # (N, V)
    u = torch.rand(cdf.shape[:-1] + (1,), generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[..., -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.size(-1) - 1)


def generate_tokens(
    step: StepFn,
    logits: Tensor,
    state: object,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """Yield (N,) new tokens, one step at a time, starting from the prompt's last logits (N, V)."""
    check_sampling_options(temperature, top_k, top_p)
    for i in range(max_new_tokens):
        tokens = sample_next(logits, temperature, top_k, top_p, generator)
        yield tokens
        if i + 1 < max_new_tokens:
            logits, state = step(tokens, state)


def lookup_draft(tokens: list[int], max_tokens: int, max_ngram: int = 3, window: int = 2048) -> list[int]:
    """Prompt-lookup decoding's guess at what comes next: the tokens that followed the latest earlier
    occurrence of the text's last n tokens (n from `max_ngram` down to 1) that is followed by `max_tokens` of
    them (else the occurrence followed by the most); [] where the text does not repeat itself. Only the last
    `window` tokens are searched.

    >>> lookup_draft([5, 6, 7, 8, 5, 6], 2)
    [7, 8]
    """
    recent = tokens[-window:]
    for n in range(min(max_ngram, len(recent) - 1), 0, -1):
        tail, best = recent[-n:], []
        for start in range(len(recent) - n - 1, -1, -1):  # the latest occurrence first
            if recent[start : start + n] == tail:
                found = recent[start + n : start + n + max_tokens]
                if len(found) > len(best):
                    best = found
                if len(best) == max_tokens:  # (a latest occurrence overlapping the tail has fewer tokens after it)
                    break
        if best:
            return best
    return []


def greedy_tokens_with_lookup(
    verify: Callable[[Tensor, object], tuple[Tensor, object]],
    rewind: Callable[[object, int], object],
    logits: Tensor,
    state: object,
    context: list[int],
    max_new_tokens: int,
    lookahead: int = 10,
) -> Iterator[Tensor]:
    """Greedy tokens (1,) as `generate_tokens(..., top_k=1)` yields them, several per model call where the
    text repeats itself: prompt-lookup decoding (Saxena 2023; transformers' `prompt_lookup_num_tokens`).

    Each call checks a guess copied from earlier in the text (`lookup_draft`, up to `lookahead` tokens): the
    model reads the last token and the guess in one pass, which costs about what one token costs while the
    weights, not the arithmetic, bound a step; the guessed tokens it would have chosen itself are kept, with
    its own next token after them. So the tokens are the greedy ones (up to the rounding of a pass over
    several positions instead of one). The guesses grow by two tokens after one is confirmed whole and shrink
    to what was confirmed (and one more) otherwise, as transformers' assistant does, so that text that does
    not repeat itself costs little more than plain decoding.

    `verify(ids (1, T), state) -> (logits (1, T, V), state)` runs the model on T more tokens;
    `rewind(state, length)` keeps the state's first `length` positions; `context` is the prompt's ids; `logits`
    (1, V) are the prompt's last.
    """
    if logits.size(0) != 1:
        raise ConfigError("prompt-lookup decoding generates one sequence at a time")
    text = list(context)
    length = len(text)  # positions in the state
    token = int(greedy(logits)[0])
    produced, size = 0, lookahead
    while True:
        yield torch.tensor([token])
        text.append(token)
        produced += 1
        if produced == max_new_tokens:
            return
        guess = lookup_draft(text, min(size, max_new_tokens - produced))
        logits, state = verify(torch.tensor([[token, *guess]], device=logits.device), state)  # (1, 1 + G, V)
        chosen = greedy(logits[0]).tolist()  # the model's choice after each of the tokens it read
        kept = 0
        while kept < len(guess) and chosen[kept] == guess[kept]:
            kept += 1
        if guess:
            size = min(lookahead, size + 2) if kept == len(guess) else kept + 1
        for right in guess[:kept]:
            yield torch.tensor([right])
            text.append(right)
            produced += 1
        if produced == max_new_tokens:
            return
        length += 1 + kept
        if kept < len(guess):
            state = rewind(state, length)  # drop the positions of the wrong guesses
        token = chosen[kept]


class StopStrings:
    """Cuts generated text at the first stop string, holding back what could still become one.

    `feed(text)` returns the part that is safe to show now; `done` turns True once a stop string appeared.
    """

    def __init__(self, stops: list[str] | None):
        self.stops = [s for s in (stops or []) if s]
        self.holdback = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.shown = 0
        self.done = False

    def feed(self, piece: str) -> str:
        if self.done:
            return ""
        self.text += piece
        hits = [i for i in (self.text.find(s, max(0, self.shown - self.holdback)) for s in self.stops) if i >= 0]
        if hits:
            self.done = True
            self.text = self.text[: min(hits)]
            end = len(self.text)
        else:
            end = max(self.shown, len(self.text) - self.holdback)
        out = self.text[self.shown : end]
        self.shown = end
        return out

    def flush(self) -> str:
        out = self.text[self.shown :]
        self.shown = len(self.text)
        return out
