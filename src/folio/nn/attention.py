"""Attention for recurrent encoder–decoders: additive (Bahdanau) and multiplicative (Luong dot, general).

Every module takes one decoder query per sequence and the whole encoder memory:

    context, weights = attention(query, memory, mask)
    # query (B, Dq), memory (B, S, Dm), mask (B, S) bool (True = real source token, see nn/masks.py)
    # context (B, Dm), weights (B, S): a distribution over the real source tokens (padding gets 0)

Decoding calls attention once per output step over the same memory, so the part of the score that
depends only on the memory (Bahdanau's W_k·memory, Luong general's W·memory) is computed once by
`prepare(memory)` and passed back as `keys`. `forward_all` scores a whole target sequence of queries
at once (B, T, Dq) for training paths that have every query in advance.

    >>> attn = make_attention("bahdanau", query_dim=8, memory_dim=6)
    >>> ctx, w = attn(torch.randn(2, 8), torch.randn(2, 5, 6), torch.ones(2, 5, dtype=torch.bool))
    >>> ctx.shape, w.shape
    (torch.Size([2, 6]), torch.Size([2, 5]))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from folio.errors import ConfigError
from folio.nn.masks import masked_fill_scores

ATTENTION_TYPES = ("none", "bahdanau", "luong_dot", "luong_general")


class _Attention(nn.Module):
    def prepare(self, memory: Tensor) -> Tensor:
        """The memory-only part of the score, (B, S, K); computed once per source."""
        return memory

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:  # (B, T, Dq), (B, S, K) -> (B, T, S)
        raise NotImplementedError

    def forward_all(self, query: Tensor, memory: Tensor, mask: Tensor | None, keys: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Queries (B, T, Dq) → contexts (B, T, Dm), weights (B, T, S)."""
        keys = self.prepare(memory) if keys is None else keys
        scores = masked_fill_scores(self.scores(query, keys), None if mask is None else mask[:, None, :])
        weights = scores.softmax(-1)  # (B, T, S)
        return weights @ memory, weights

    def forward(self, query: Tensor, memory: Tensor, mask: Tensor | None, keys: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One query per sequence (B, Dq) → context (B, Dm), weights (B, S)."""
        context, weights = self.forward_all(query[:, None, :], memory, mask, keys)
        return context[:, 0], weights[:, 0]


class AdditiveAttention(_Attention):
    """Bahdanau et al. (2015): score(q, m) = vᵀ tanh(W_q q + W_k m)."""

    def __init__(self, query_dim: int, memory_dim: int, attention_dim: int | None = None):
        super().__init__()
        attention_dim = attention_dim or query_dim
        self.query_proj = nn.Linear(query_dim, attention_dim, bias=False)
        self.key_proj = nn.Linear(memory_dim, attention_dim)
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def prepare(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)  # (B, S, A)

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        q = self.query_proj(query)  # (B, T, A)
        return self.v(torch.tanh(q[:, :, None, :] + keys[:, None, :, :])).squeeze(-1)  # (B, T, S)


class DotAttention(_Attention):
    """Luong et al. (2015) "dot": score(q, m) = qᵀ m (query and memory must have the same size)."""

    def __init__(self, query_dim: int, memory_dim: int):
        super().__init__()
        if query_dim != memory_dim:
            raise ConfigError(
                f"Luong dot attention needs the decoder size ({query_dim}) to equal the encoder output size "
                f"({memory_dim}); use luong_general or bahdanau, or match the sizes"
            )

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        return query @ keys.transpose(1, 2)  # (B, T, S)


class GeneralAttention(_Attention):
    """Luong et al. (2015) "general" (multiplicative): score(q, m) = qᵀ W m."""

    def __init__(self, query_dim: int, memory_dim: int):
        super().__init__()
        self.key_proj = nn.Linear(memory_dim, query_dim, bias=False)

    def prepare(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)  # (B, S, Dq)

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        return query @ keys.transpose(1, 2)  # (B, T, S)


def make_attention(kind: str, query_dim: int, memory_dim: int) -> _Attention | None:
    """`none` → None; `bahdanau`, `luong_dot` or `luong_general` → the module."""
    if kind == "none":
        return None
    if kind == "bahdanau":
        return AdditiveAttention(query_dim, memory_dim)
    if kind == "luong_dot":
        return DotAttention(query_dim, memory_dim)
    if kind == "luong_general":
        return GeneralAttention(query_dim, memory_dim)
    raise ConfigError(f"attention {kind!r}: choose one of {', '.join(ATTENTION_TYPES)}")
