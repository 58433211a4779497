"""The decoder-only Transformer language model (GPT-2's shape), built from `folio.nn.transformer` blocks.

GPT follows the recurrent language model's contract, `forward(ids, state) -> (logits, state)`, where the
state is a key/value cache. So `folio lm` trains, evaluates and samples it with the same code: each new
token costs one position's computation. When the cache would pass the context length, the model keeps
the last half of the context, recomputes its cache once, and goes on (a sliding window).

    >>> gpt = GPT(GPTConfig(vocab_size=65, layers=2, heads=2, hidden=32, context=16)).eval()  # training keeps no cache
    >>> logits, state = gpt(torch.zeros(3, 10, dtype=torch.long))
    >>> logits.shape, state.length
    (torch.Size([3, 10, 65]), 10)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import ConfigError
from folio.models import check_fractions, check_shape, normal_init
from folio.nn.transformer import KVCache, PositionalEncoding, TransformerBlock


@dataclass
class GPTConfig:
    """The "model" section of a `folio lm train --arch gpt` checkpoint."""

    vocab_size: int
    arch: str = "gpt"
    layers: int = 4
    heads: int = 4
    hidden: int = 192  # the model width (embedding size)
    context: int = 128  # positions the model attends over
    dropout: float = 0.1  # on the embeddings and each sub-layer's output (GPT-2's embd/resid dropout)
    inner_dropout: float | None = None  # on attention weights and feed-forward hidden units; None: `dropout`
    positions: str = "learned"  # learned | sinusoidal (added to the embeddings) | rope (rotary, in attention)
    ff_mult: int = 4

    def __post_init__(self):
        check_shape(self, "gpt")
        check_fractions(self, "inner_dropout")
        if self.positions not in ("learned", "sinusoidal", "rope"):
            raise ConfigError(f"positions {self.positions!r}: choose learned, sinusoidal or rope")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GPTState:
    """What generation carries between steps: the tokens in the window and each layer's key/value cache."""

    tokens: Tensor  # (B, S)
    caches: list  # per layer: (keys, values), each (B, heads, S, head_dim), or a KVCache that reads as that pair

    @property
    def length(self) -> int:
        return self.tokens.size(1)


class GPT(nn.Module):
    """Token embedding + positions → pre-LN causal blocks → LayerNorm → a head tied to the embedding."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.hidden)
        rope = c.positions == "rope"
        self.positions = None if rope else PositionalEncoding(c.hidden, c.context, learned=c.positions == "learned")
        self.dropout = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.hidden, c.heads, c.ff_mult * c.hidden, c.dropout, norm_first=True,
                             rotary_len=c.context if rope else 0, inner_dropout=c.inner_dropout)
            for _ in range(c.layers)
        )
        self.norm = nn.LayerNorm(c.hidden)
        self.head = nn.Linear(c.hidden, c.vocab_size, bias=False)
        self.head.weight = self.embedding.weight
        self.apply(normal_init)
        for block in self.blocks:  # GPT-2: residual projections shrink with depth
            for proj in (block.self_attn.out_proj, block.ff.fc2):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * c.layers))

    def _add_positions(self, x: Tensor, offset: int = 0) -> Tensor:
        return x if self.positions is None else self.positions(x, offset)  # rope: in the attention instead

    def _run(self, ids: Tensor, state: GPTState | None, need_weights: bool = False,
             last_only: bool = False) -> tuple[Tensor, GPTState | None, list]:
        offset = 0 if state is None else state.length
        x = self.dropout(self._add_positions(self.embedding(ids), offset))  # (B, T, C)
        caches, weights = [], []
        for i, block in enumerate(self.blocks):
            # a decoding step writes its keys/values into the cache's room (grown once from the prompt's)
            cache = None if state is None else {"self": KVCache.growing(state.caches[i], ids.size(1), self.config.context)}
            x, extras = block(x, causal=True, cache=cache, need_weights=need_weights)
            caches.append(extras["self"])
            weights.append(extras["self_weights"])
        if last_only:
            x = x[:, -1:]  # (B, 1, C): a prompt's other positions need no logits
        logits = self.head(self.norm(x))  # (B, T, V)
        if self.training and not need_weights:
            return logits, None, weights  # training never carries a cache
        tokens = ids if state is None else torch.cat([state.tokens, ids], dim=1)
        return logits, GPTState(tokens, caches), weights

    def forward(self, ids: Tensor, state: GPTState | None = None, last_only: bool = False) -> tuple[Tensor, GPTState | None]:
        """ids (B, T) → logits (B, T, V) and the cache; any T, with a sliding window past the context.
        `last_only`: the logits of the last position alone (B, 1, V), what generation needs after a prompt."""
        context = self.config.context
        if state is None and ids.size(1) <= context:
            logits, state, _ = self._run(ids, None, last_only=last_only)
            return logits, state
        keep = context // 2  # tokens of context kept when the window slides
        pieces = []
        for chunk in ids.split(max(1, context - keep), dim=1):
            if state is not None and state.length + chunk.size(1) > context:
                kept = state.tokens[:, state.length - keep :]
                logits, state, _ = self._run(torch.cat([kept, chunk], dim=1), None)
                logits = logits[:, kept.size(1) :]
            else:
                logits, state, _ = self._run(chunk, state, last_only=last_only)
            pieces.append(logits)
        return (pieces[-1][:, -1:] if last_only else torch.cat(pieces, dim=1)), state

    @staticmethod
    def rewind(state: GPTState, length: int) -> GPTState:
        """The state of the first `length` positions of `state` (prompt-lookup decoding drops the positions of
        the guesses the model did not confirm)."""
        caches = [cache.truncate(length) if isinstance(cache, KVCache) else tuple(t[:, :, :length] for t in cache)
                  for cache in state.caches]
        return GPTState(state.tokens[:, :length], caches)

    def _check_context(self, steps: int) -> None:
        """The whole-sequence views below have no sliding window: they take at most `context` tokens."""
        if steps > self.config.context:
            raise ConfigError(f"{steps} tokens is more than the model's context of {self.config.context}")

    def hidden_states(self, embedded: Tensor) -> Tensor:
        """Token embeddings (B, T ≤ context, C) → the final LayerNorm's output (B, T, C), causally."""
        self._check_context(embedded.size(1))
        x = self.dropout(self._add_positions(embedded))
        for block in self.blocks:
            x, _ = block(x, causal=True)
        return self.norm(x)

    def attention_weights(self, ids: Tensor) -> list[Tensor]:
        """Per layer, the self-attention weights (B, heads, T, T) for ids (B, T ≤ context)."""
        self._check_context(ids.size(1))
        return self._run(ids, None, need_weights=True)[2]

    def loss(self, batch) -> Tensor:
        """Mean next-token cross-entropy (nats) over windows of at most `context` tokens."""
        if batch.inputs.size(1) > self.config.context:
            raise ConfigError(
                f"training windows of {batch.inputs.size(1)} tokens are longer than the context "
                f"({self.config.context}): lower --seq-len or raise --context"
            )
        logits, _ = self(batch.inputs)
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch.targets.reshape(-1))


__all__ = ["GPT", "GPTConfig", "GPTState"]
