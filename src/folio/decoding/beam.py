"""Greedy decoding and beam search for encoder–decoders, batched over sentences *and* beams.

Both drive a model through two functions, so any encoder–decoder (recurrent or Transformer) can use them:

    step(tokens (N,), state) -> (logits (N, V), state, attention (N, S) or None)
    reorder(state, index (N,)) -> state   # keep rows `index`, in that order

Beam search holds the B sentences × k beams as N = B*k rows (sentence-major: rows b*k .. b*k+k-1 are
sentence b's beams) and does every step with tensor operations over all rows: there is no Python loop
over sentences or beams, only over output positions. The caller passes the state already expanded to
B*k rows; `reorder` only ever moves rows within one sentence.

Scores are sums of log-probabilities. Hypotheses are ranked by the GNMT length penalty (Wu et al. 2016)
score / lp(len), lp(len) = ((5 + len) / 6) ** length_penalty, where len counts the tokens produced
(EOS included); length_penalty = 0 ranks by the plain log-probability.
A finished hypothesis stays in its beam with its score frozen, and competes with the live ones on the
penalised score. A sentence stops as soon as no live hypothesis can still beat its `num_return` best
finished ones (an exact bound, not a heuristic); the search ends when every sentence has stopped or
reached its length limit.
With beam_size = 1 this is exactly greedy decoding (tested).

    >>> out = beam_search(step, reorder, state, batch_size=2, sos_id=1, eos_id=2, beam_size=5,
    ...                   max_lengths=torch.tensor([20, 30]))   # doctest: +SKIP
    >>> out[0][0].tokens, out[0][0].score                        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from folio.errors import ConfigError

StepFn = Callable[[Tensor, object], tuple[Tensor, object, Tensor | None]]
ReorderFn = Callable[[object, Tensor], object]


@dataclass
class Hypothesis:
    tokens: list[int]  # without SOS and EOS
    score: float  # length-penalised log-probability (the ranking score)
    log_prob: float  # plain sum of log-probabilities, EOS included
    attention: Tensor | None = None  # (len(tokens) + 1, S): one row per output step, EOS's included


def length_penalty_factor(lengths: Tensor, alpha: float) -> Tensor:
    """GNMT: ((5 + |Y|) / 6) ** alpha."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def check_decoding_options(beam_size: int, num_return: int, length_penalty: float, no_repeat_ngram_size: int) -> None:
    if beam_size < 1:
        raise ConfigError(f"beam_size must be at least 1, got {beam_size}")
    if not 1 <= num_return <= beam_size:
        raise ConfigError(f"num_return ({num_return}) must be between 1 and beam_size ({beam_size})")
    if length_penalty < 0:
        raise ConfigError(f"--length-penalty must be >= 0, got {length_penalty}")
    if no_repeat_ngram_size < 0:
        raise ConfigError(f"--no-repeat-ngram-size must be >= 0, got {no_repeat_ngram_size}")


def banned_ngram_tokens(history: Tensor, n: int, vocab_size: int) -> Tensor:
    """(N, t) generated tokens → (N, V) bool, True for tokens that would repeat an n-gram of the row."""
    rows, steps = history.shape
    banned = torch.zeros(rows, vocab_size, dtype=torch.bool, device=history.device)
    if n <= 0 or steps < n:
        return banned
    if n == 1:
        return banned.scatter_(1, history, True)
    windows = history.unfold(1, n, 1)  # (N, W, n): every n-gram so far
    prefix = history[:, steps - n + 1 :]  # (N, n-1): what the next token would extend
    match = (windows[:, :, :-1] == prefix[:, None, :]).all(-1)  # (N, W)
    counts = torch.zeros(rows, vocab_size, dtype=torch.long, device=history.device)
    counts.scatter_add_(1, windows[:, :, -1], match.long())
    return counts > 0


def greedy_decode(
    step: StepFn, state: object, batch_size: int, sos_id: int, eos_id: int, max_lengths: Tensor,
    device: torch.device | None = None,
) -> list[Hypothesis]:
    """The most likely token at every step; `max_lengths` (B,) caps each output (EOS included)."""
    device = device or max_lengths.device
    max_lengths = max_lengths.to(device)
    tokens = torch.full((batch_size,), sos_id, dtype=torch.long, device=device)
    outputs, attentions, log_probs = [], [], torch.zeros(batch_size, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    for t in range(int(max_lengths.max())):
        logits, state, weights = step(tokens, state)
        logp = logits.float().log_softmax(-1)  # (B, V)
        force_end = (t + 1 >= max_lengths) & ~finished
        logp[force_end] = torch.where(torch.arange(logp.size(1), device=device) == eos_id, 0.0, float("-inf"))
        tokens = logp.argmax(-1)
        log_probs += torch.where(finished, 0.0, logp.gather(1, tokens[:, None])[:, 0])
        tokens = torch.where(finished, eos_id, tokens)
        outputs.append(tokens)
        attentions.append(weights)
        finished |= tokens == eos_id
        if bool(finished.all()):
            break
    seqs = torch.stack(outputs, 1).tolist()  # (B, T)
    attn = torch.stack(attentions, 1) if attentions[0] is not None else None  # (B, T, S)
    result = []
    for b, seq in enumerate(seqs):
        length = seq.index(eos_id) if eos_id in seq else len(seq)
        result.append(Hypothesis(seq[:length], float(log_probs[b]), float(log_probs[b]),
                                 None if attn is None else attn[b, : length + 1]))
    return result


def beam_search(
    step: StepFn,
    reorder: ReorderFn,
    state: object,
    batch_size: int,
    sos_id: int,
    eos_id: int,
    beam_size: int,
    max_lengths: Tensor,
    length_penalty: float = 0.6,
    no_repeat_ngram_size: int = 0,
    num_return: int = 1,
    device: torch.device | None = None,
    keep_attention: bool = True,
) -> list[list[Hypothesis]]:
    """The `num_return` best hypotheses of each sentence, best first. `state` has B*beam_size rows.

    `keep_attention=False` skips carrying every hypothesis's attention history (faster on long outputs).
    """
    check_decoding_options(beam_size, num_return, length_penalty, no_repeat_ngram_size)
    device = device or max_lengths.device
    B, k = batch_size, beam_size
    N = B * k
    limit = max_lengths.to(device).repeat_interleave(k)  # (N,)
    tokens = torch.full((N,), sos_id, dtype=torch.long, device=device)
    # Only the first beam of each sentence is live at the start, so the k beams do not all repeat it.
    scores = torch.full((B, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    scores = scores.view(N)
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    lengths = torch.zeros(N, dtype=torch.long, device=device)  # tokens produced, EOS included
    history = torch.empty(N, 0, dtype=torch.long, device=device)
    attn_history = None
    row_base = (torch.arange(B, device=device) * k)[:, None]  # (B, 1)
    for t in range(int(max_lengths.max())):
        logits, state, weights = step(tokens, state)
        logp = logits.float().log_softmax(-1)  # (N, V)
        V = logp.size(1)
        if no_repeat_ngram_size:
            logp = logp.masked_fill(banned_ngram_tokens(history, no_repeat_ngram_size, V), float("-inf"))
        eos_only = torch.where(torch.arange(V, device=device) == eos_id, 0.0, float("-inf"))  # (V,)
        force_end = (t + 1 >= limit) & ~finished
        logp = torch.where(force_end[:, None], eos_only, logp)
        # A finished hypothesis has exactly one continuation (EOS again) that costs nothing.
        logp = torch.where(finished[:, None], eos_only, logp)
        candidate = scores[:, None] + logp  # (N, V)
        new_lengths = torch.where(finished, lengths, lengths + 1)  # (N,)
        ranking = candidate / length_penalty_factor(new_lengths, length_penalty)[:, None]  # (N, V)
        # The best k of the sentence's k*V candidates; finished rows offer a single one.
        _, flat = ranking.view(B, k * V).topk(k, dim=1)  # (B, k)
        source_beam = flat // V
        next_tokens = (flat % V).view(N)
        parents = (row_base + source_beam).view(N)  # (N,) rows the new beams continue
        scores = candidate.view(B, k * V).gather(1, flat).view(N)
        lengths = new_lengths[parents]
        was_finished = finished[parents]
        finished = was_finished | (next_tokens == eos_id)
        history = torch.cat([history[parents], next_tokens[:, None]], 1)  # (N, t+1)
        if weights is not None and keep_attention:
            step_attn = weights[parents][:, None, :]  # (N, 1, S)
            attn_history = step_attn if attn_history is None else torch.cat([attn_history[parents], step_attn], 1)
        tokens = next_tokens
        state = reorder(state, parents)
        # A sentence is done once its num_return-th best finished hypothesis beats every live one's best
        # possible final score: a live score can only fall, and its penalised value is at most
        # score / lp(the sentence's length limit). Its remaining beams are frozen; the search stops when all are.
        penalised = (scores / length_penalty_factor(lengths, length_penalty)).view(B, k)
        done_rows = finished.view(B, k)
        kth_finished = penalised.masked_fill(~done_rows, float("-inf")).topk(num_return, dim=1).values[:, -1]  # (B,)
        live_bound = (scores / length_penalty_factor(limit, length_penalty)).view(B, k)
        best_live = live_bound.masked_fill(done_rows, float("-inf")).max(1).values  # (B,)
        sentence_done = (done_rows.sum(1) >= num_return) & (kth_finished >= best_live)
        finished = finished | sentence_done.repeat_interleave(k)
        if bool(finished.all()):
            break
    final = (scores / length_penalty_factor(lengths, length_penalty)).view(B, k)
    order = final.argsort(dim=1, descending=True)[:, :num_return]  # (B, num_return)
    rows_out = (row_base + order).tolist()
    history_list, lengths_list = history.tolist(), lengths.tolist()
    final_flat, scores_flat = final.view(N).tolist(), scores.tolist()
    results = []
    for b in range(B):
        hyps = []
        for row in rows_out[b]:
            length = lengths_list[row]
            seq = history_list[row][:length]
            body = seq[:-1] if seq and seq[-1] == eos_id else seq
            attn = None if attn_history is None else attn_history[row, :length]
            hyps.append(Hypothesis(body, final_flat[row], scores_flat[row], attn))
        results.append(hyps)
    return results
