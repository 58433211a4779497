"""Attention weights are distributions over the real source tokens, whatever sits in the padding."""

import pytest
import torch

from folio.errors import ConfigError
from folio.nn.attention import AdditiveAttention, DotAttention, GeneralAttention, make_attention
from folio.nn.masks import causal_mask, lengths_to_mask, padding_mask

KINDS = ["bahdanau", "luong_dot", "luong_general"]


def test_masks_keep_true():
    mask = lengths_to_mask(torch.tensor([3, 1, 2]), 4)
    assert mask.tolist() == [[True, True, True, False], [True, False, False, False], [True, True, False, False]]
    assert padding_mask(torch.tensor([[5, 6, 0]]), 0).tolist() == [[True, True, False]]
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]


@pytest.mark.parametrize("kind", KINDS)
def test_weights_sum_to_one_and_ignore_padding(kind):
    torch.manual_seed(0)
    attn = make_attention(kind, 8, 8)
    memory = torch.randn(3, 6, 8)
    lengths = torch.tensor([6, 2, 4])
    mask = lengths_to_mask(lengths, 6)
    query = torch.randn(3, 8)
    context, weights = attn(query, memory, mask)
    assert context.shape == (3, 8) and weights.shape == (3, 6)
    assert torch.allclose(weights.sum(-1), torch.ones(3))
    assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()
    # Whatever the padding holds, the result is the same.
    noisy = memory.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), 8) * 100
    context2, weights2 = attn(query, noisy, mask)
    assert torch.allclose(context, context2, atol=1e-6) and torch.allclose(weights, weights2)
    # ... and equals attention over the unpadded sequence alone.
    alone, alone_w = attn(query[1:2], memory[1:2, :2], None)
    assert torch.allclose(alone, context[1:2], atol=1e-6) and torch.allclose(alone_w, weights[1:2, :2], atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_one_query_matches_all_queries_and_prepared_keys(kind):
    torch.manual_seed(1)
    attn = make_attention(kind, 8, 8)
    memory, mask = torch.randn(2, 5, 8), lengths_to_mask(torch.tensor([5, 3]), 5)
    queries = torch.randn(2, 4, 8)
    contexts, weights = attn.forward_all(queries, memory, mask)
    keys = attn.prepare(memory)
    for t in range(4):
        c, w = attn(queries[:, t], memory, mask, keys)
        assert torch.allclose(c, contexts[:, t], atol=1e-6) and torch.allclose(w, weights[:, t], atol=1e-6)


def test_scores_follow_the_definitions():
    torch.manual_seed(2)
    q, m = torch.randn(1, 4), torch.randn(1, 3, 6)
    general = GeneralAttention(4, 6)
    _, w = general(q, m, None)
    expected = (m[0] @ general.key_proj.weight.t() @ q[0]).softmax(0)  # qᵀ W m
    assert torch.allclose(w[0], expected, atol=1e-6)
    additive = AdditiveAttention(4, 6, 5)
    _, w = additive(q, m, None)
    raw = torch.tanh(additive.query_proj(q)[:, None] + additive.key_proj(m)) @ additive.v.weight[0]
    assert torch.allclose(w, raw.softmax(-1), atol=1e-6)
    _, w = DotAttention(6, 6)(torch.randn(1, 6), m, None)
    assert torch.allclose(w.sum(), torch.tensor(1.0))


def test_bad_attention_options():
    with pytest.raises(ConfigError, match="luong_general"):
        DotAttention(4, 8)
    with pytest.raises(ConfigError, match="choose one of"):
        make_attention("cosine", 4, 4)
    assert make_attention("none", 4, 4) is None
