import math

import pytest
import torch

from folio.decoding.sampling import (
    StopStrings,
    filter_logits,
    generate_tokens,
    greedy_tokens_with_lookup,
    lookup_draft,
    sample_next,
)
from folio.errors import ConfigError


def test_top_k_keeps_exactly_k():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(filter_logits(logits, top_p=0.75)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.1)).tolist() == [[True, False, False, False]]


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    cold = filter_logits(logits, temperature=0.2).softmax(-1)[0, 0]
    hot = filter_logits(logits, temperature=5.0).softmax(-1)[0, 0]
    assert cold > 0.99 and hot < 0.45


def test_sampling_follows_the_distribution_and_the_seed():
    logits = torch.tensor([0.7, 0.2, 0.1]).log().expand(20000, 3)
    draws = sample_next(logits, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3) / len(draws)
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.02)
    again = sample_next(logits, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf])
def test_non_positive_temperature_is_refused(bad):
    with pytest.raises(ConfigError, match="temperature must be a positive number"):
        next(generate_tokens(lambda t, s: (None, s), torch.zeros(1, 3), None, 5, temperature=bad))


def test_stop_strings_cut_and_hold_back():
    stop = StopStrings(["\n\n"])
    shown = [stop.feed(c) for c in "ab\ncd\n\nef"]
    assert "".join(shown) == "ab\ncd" and stop.done
    assert shown[:4] == ["", "a", "b", "\n"]  # each character waits one step: it may start "\n\n"
    plain = StopStrings(None)
    assert "".join(plain.feed(c) for c in "abc") + plain.flush() == "abc"


def test_lookup_draft_copies_what_followed_the_latest_repeat_of_the_tail():
    assert lookup_draft([5, 6, 7, 8, 5, 6], 2) == [7, 8]
    assert lookup_draft([1, 2, 3, 9, 2, 3, 4, 2, 3], 3) == [4, 2, 3]  # the latest occurrence, not the first
    assert lookup_draft([1, 2, 3, 4], 5) == []  # nothing repeats
    assert lookup_draft([4, 1, 2, 3, 1], 2) == [2, 3]  # a one-token n-gram when no longer one repeats


@pytest.mark.parametrize("prompt", [[3, 4, 5, 3, 4, 5, 3, 4], [7, 1, 9, 2]])
def test_prompt_lookup_gives_the_greedy_tokens_in_fewer_passes(prompt):
    """A GPT that has learned nothing (its tokens are whatever it likes): prompt lookup yields exactly the greedy
    tokens, and on a looping continuation it runs the model fewer times than tokens."""
    from folio.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, layers=2, heads=2, hidden=16, context=64, positions="rope")).eval()
    ids = torch.tensor([prompt])

    def step(tokens, state):
        logits, state = model(tokens[:, None], state)
        return logits[:, -1], state

    calls = []

    def verify(tokens, state):
        calls.append(tokens.size(1))
        return model(tokens, state)

    with torch.no_grad():
        logits, state = model(ids)
        greedy = torch.cat(list(generate_tokens(step, logits[:, -1], state, 30, top_k=1))).tolist()
        logits, state = model(ids)
        looked = torch.cat(list(greedy_tokens_with_lookup(verify, model.rewind, logits[:, -1], state, prompt, 30,
                                                          lookahead=6))).tolist()
    assert looked == greedy
    assert len(calls) <= 29 and sum(calls) >= len(calls)
    if len(set(greedy[10:])) <= 4:  # a loop: guesses come true
        assert len(calls) < 20


def test_greedy_is_argmax_with_ties_infinities_nans_and_strided_rows():
    """Folio's greedy kernel picks what `argmax` picks: the first of equal largest values, in rows of any length
    (vector blocks and what is left of them), rows of -inf, rows `ld` apart; a row with a NaN goes to argmax."""
    from folio.decoding.sampling import greedy
    from folio.nn import kernels

    torch.manual_seed(0)
    for width in (1, 7, 8, 33, 49_152 + 5):
        logits = torch.randn(6, width)
        logits[1] = float("-inf")
        logits[2, width // 2:] = logits[2].max() + 1  # ties: the first one
        logits[3, -1] = 1e9  # the largest in the tail
        assert torch.equal(greedy(logits), logits.argmax(-1)), width
        wide = torch.randn(4, width + 16)[:, 3:3 + width]  # rows width + 16 apart
        assert torch.equal(greedy(wide), wide.argmax(-1))
    with_nan = torch.randn(3, 100)
    with_nan[1, 40] = float("nan")
    assert torch.equal(greedy(with_nan), with_nan.argmax(-1))
    library = kernels.load()
    if library is not None:  # the kernel itself refuses the row with a NaN (so greedy asked argmax)
        out = torch.empty(3, dtype=torch.long)
        assert library.folio_argmax_rows(with_nan.data_ptr(), 3, 100, 100, out.data_ptr()) == -1
        out = torch.empty(6, dtype=torch.long)
        assert library.folio_argmax_rows(logits.data_ptr(), 6, logits.size(1), logits.size(1), out.data_ptr()) == 0
        assert torch.equal(out, logits.argmax(-1))
