"""Greedy and beam search: beam 1 is greedy, beam finds what greedy misses, batching changes nothing."""

import math

import pytest
import torch

from folio.decoding.beam import banned_ngram_tokens, beam_search, greedy_decode, length_penalty_factor
from folio.errors import ConfigError
from folio.models.seq2seq import Seq2Seq, Seq2SeqConfig

SOS, EOS = 1, 2


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    config = Seq2SeqConfig(src_vocab_size=12, tgt_vocab_size=9, hidden=16, embedding_dim=8, dropout=0.0, **kw)
    return Seq2Seq(config).eval()


def _sources(seed=0, batch=6):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (batch,), generator=g)
    src = torch.randint(4, 12, (batch, int(lengths.max())), generator=g)
    src[torch.arange(src.size(1))[None, :] >= lengths[:, None]] = 0
    return src, lengths


def _run_beam(model, src, lengths, k, **kw):
    state = model.expand_state(model.encode(src, lengths), k)
    return beam_search(model.decode_step, model.reorder_state, state, src.size(0), SOS, EOS, k,
                       torch.full((src.size(0),), 12), **kw)


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "none"])
@torch.no_grad()
def test_beam_width_one_is_greedy(attention):
    for seed in range(3):
        model = _model(seed, attention=attention, cell="lstm" if seed == 1 else "gru")
        src, lengths = _sources(seed)
        greedy = greedy_decode(model.decode_step, model.encode(src, lengths), src.size(0), SOS, EOS, torch.full((6,), 12))
        beam = _run_beam(model, src, lengths, 1, length_penalty=1.0)
        assert [g.tokens for g in greedy] == [b[0].tokens for b in beam]
        assert all(math.isclose(g.log_prob, b[0].log_prob, abs_tol=1e-4) for g, b in zip(greedy, beam, strict=False))


@torch.no_grad()
def test_batched_beam_equals_one_sentence_at_a_time():
    model = _model(3)
    src, lengths = _sources(3)
    together = _run_beam(model, src, lengths, 4, num_return=3)
    for b in range(src.size(0)):
        alone = _run_beam(model, src[b : b + 1, : int(lengths[b])], lengths[b : b + 1], 4, num_return=3)
        assert [h.tokens for h in alone[0]] == [h.tokens for h in together[b]]
        assert all(math.isclose(x.score, y.score, abs_tol=1e-4) for x, y in zip(alone[0], together[b], strict=False))


class ToyModel:
    """A hand-built next-token table where the greedy first choice leads to a worse sentence.

    From SOS: A (0.6) or B (0.4). After A, four tokens are equally likely (0.25 each, among them EOS),
    after B, EOS has 0.9. Greedy: A then 0.25 → 0.15. Best: B EOS → 0.36.
    """

    A, B, C, D, E = 3, 4, 5, 6, 7
    V = 8

    def __init__(self):
        table = torch.full((self.V, self.V), 1e-9)
        table[SOS, self.A], table[SOS, self.B] = 0.6, 0.4
        table[self.A, [EOS, self.C, self.D, self.E]] = 0.25
        table[self.B, EOS], table[self.B, self.C] = 0.9, 0.1
        for t in (self.C, self.D, self.E, EOS):
            table[t, EOS] = 1.0
        self.logits = (table / table.sum(-1, keepdim=True)).log()

    def step(self, tokens, state):
        return self.logits[tokens], state, None

    @staticmethod
    def reorder(state, index):
        return state


def test_beam_finds_the_best_sequence_where_greedy_does_not():
    toy = ToyModel()
    limit = torch.tensor([5, 5])
    greedy = greedy_decode(toy.step, None, 2, SOS, EOS, limit)
    assert greedy[0].tokens == [toy.A] and math.isclose(greedy[0].log_prob, math.log(0.6 * 0.25), rel_tol=1e-4)
    beam = beam_search(toy.step, toy.reorder, None, 2, SOS, EOS, 2, limit, length_penalty=0.0, num_return=2)
    for sentence in beam:
        assert sentence[0].tokens == [toy.B]
        assert math.isclose(sentence[0].log_prob, math.log(0.4 * 0.9), rel_tol=1e-4)
        assert sentence[0].score > sentence[1].score  # n-best comes best first
        assert greedy[0].log_prob < sentence[0].log_prob


def test_length_penalty_and_max_length():
    assert torch.allclose(length_penalty_factor(torch.tensor([1, 7]), 1.0), torch.tensor([1.0, 2.0]))
    toy = ToyModel()
    out = beam_search(toy.step, toy.reorder, None, 1, SOS, EOS, 3, torch.tensor([1]))
    assert out[0][0].tokens == []  # a limit of one token leaves room for EOS only
    out = greedy_decode(toy.step, None, 1, SOS, EOS, torch.tensor([2]))
    assert len(out[0].tokens) <= 1


def test_no_repeat_ngram_bans_exactly_the_repeats():
    history = torch.tensor([[5, 6, 5, 6, 5], [1, 2, 3, 4, 5]])
    banned = banned_ngram_tokens(history, 2, 8)
    assert banned[0].nonzero().flatten().tolist() == [6]  # "5 6" occurred: 6 may not follow 5 again
    assert not banned[1].any()
    assert banned_ngram_tokens(history, 3, 8)[0].nonzero().flatten().tolist() == [6]  # "6 5" → 6 ("6 5 6")
    model = _model(4)
    src, lengths = _sources(4)
    for sentence in _run_beam(model, src, lengths, 3, no_repeat_ngram_size=2):
        tokens = sentence[0].tokens
        bigrams = list(zip(tokens, tokens[1:], strict=False))
        assert len(bigrams) == len(set(bigrams))


def test_bad_options():
    toy = ToyModel()
    with pytest.raises(ConfigError, match="num_return"):
        beam_search(toy.step, toy.reorder, None, 1, SOS, EOS, 2, torch.tensor([3]), num_return=3)
    with pytest.raises(ConfigError, match="beam_size"):
        beam_search(toy.step, toy.reorder, None, 1, SOS, EOS, 0, torch.tensor([3]))
