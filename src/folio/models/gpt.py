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
from folio.flags import finite_float, positive_int
from folio.models import check_fractions, check_shape, normal_init
from folio.models.options import option
from folio.nn.kv_cache import KVCache
from folio.nn.kv_rows import left_pad, select_rows, stack_right_aligned
from folio.nn.positions import PositionalEncoding
from folio.nn.transformer import TransformerBlock, decode_blocks


@dataclass
class GPTConfig:
    """The "model" section of a `folio lm train --arch gpt` checkpoint."""

    vocab_size: int
    arch: str = "gpt"
    # `folio lm train`'s flags train a small model by default (`cli_default`): 2 layers of width 128
    layers: int = option(4, type=positive_int, help="layers", cli_default=2)
    heads: int = option(4, type=positive_int, help="attention heads")
    hidden: int = option(192, type=positive_int, help="the model width (embedding size)", cli_default=128)
    context: int = option(128, type=positive_int, help="positions attended over (default: --seq-len)",
                          cli_default=lambda flags: flags.seq_len)
    dropout: float = option(0.1, type=finite_float, cli_default=0.2,  # GPT-2's embd/resid dropout
                            help="on the embeddings and each sub-layer's output")
    inner_dropout: float | None = option(None, type=finite_float,
                                         help="on attention weights and feed-forward hidden units (default: --dropout)")
    positions: str = option("learned", choices=("learned", "sinusoidal", "rope"),
                            help="position encoding: learned or sinusoidal vectors added to the embeddings, or rotary "
                                 "(RoPE) in attention")
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
    """What generation carries between steps: the tokens in the window and each layer's key/value cache.

    The rows of a batch of generations that started apart (continuous batching) sit at different positions:
    `merge` right-aligns them in S columns (`folio.nn.kv_rows`) and `mask` marks each row's own positions;
    `select` keeps some rows. A state of one prompt, or of rows of one length read together, has no mask;
    prompts of different lengths read together (`GPT.read_prompts`) sit as `merge` would put them.
    """

    tokens: Tensor  # (B, S)
    caches: list  # per layer: (keys, values), each (B, heads, S, head_dim), or a KVCache that reads as that pair
    mask: Tensor | None = None  # (B, S) True on each row's own positions (right-aligned); None: every row has all S

    @property
    def length(self) -> int:
        return self.tokens.size(1)

    def row_mask(self) -> Tensor:
        return torch.ones_like(self.tokens, dtype=torch.bool) if self.mask is None else self.mask

    @staticmethod
    def merge(states: list[GPTState], limit: int | None = None) -> GPTState:
        """One state holding the rows of `states` in order, each right-aligned; `limit`: the model's context."""
        length = max(state.length for state in states)
        tokens = torch.cat([left_pad(state.tokens, length, 0) for state in states])
        mask = torch.cat([left_pad(state.row_mask(), length, False) for state in states])
        caches = [stack_right_aligned([tuple(state.caches[layer]) for state in states], length, limit)
                  for layer in range(len(states[0].caches))]
        return GPTState(tokens, caches, mask)

    def reserve(self, positions: int, limit: int | None = None) -> GPTState:
        """This state with room in every layer's cache for `positions` in all, allocated at once (its pages
        become resident as positions are written); `limit`: the model's context. Growing by doubling on the way
        there copies the cache into a buffer twice its size and holds both during the copy: SmolLM2's cache at
        256 → 512 positions, 35 MB where the 500 positions a generation needed take 23."""
        caches = [KVCache.growing(cache, 0, limit, capacity=positions) for cache in self.caches]
        return GPTState(self.tokens, caches, self.mask)

    def select(self, rows: Tensor, limit: int | None = None) -> GPTState:
        """The state of `rows` (R,) of this batch, without the leading positions none of them uses."""
        mask = self.row_mask().index_select(0, rows)
        start = int(mask.any(0).int().argmax())  # the first column a kept row uses
        caches = [select_rows(cache, rows, start, limit) for cache in self.caches]
        return GPTState(self.tokens.index_select(0, rows)[:, start:], caches, mask[:, start:])


class GPT(nn.Module):
    """Token embedding + positions → pre-LN causal blocks → LayerNorm → a head tied to the embedding."""

    kind = "causal"  # the language models' contract: see folio.models
    stateful = False  # a window attends within itself: no state carries over to the next

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

    def _add_positions(self, x: Tensor, offset: int | Tensor = 0) -> Tensor:
        return x if self.positions is None else self.positions(x, offset)  # rope: in the attention instead

    def _run(self, ids: Tensor, state: GPTState | None, need_weights: bool = False, last_only: bool = False,
             mask: Tensor | None = None) -> tuple[Tensor, GPTState | None, list]:
        """`mask` (B, T), without a state: True on each row's own tokens of `ids`, the others left padding
        (prompts read together, `read_prompts`)."""
        offset = 0 if state is None else state.length
        positions, key_mask = None, None
        if state is not None and state.mask is not None:  # rows at different positions: each row its own
            mask = torch.cat([state.mask, state.mask.new_ones(ids.shape)], dim=1)  # (B, S + T)
        if mask is not None:
            steps = ids.size(1)
            positions = (mask.cumsum(1) - 1).clamp(min=0)[:, -steps:]  # (B, T): a token's index among its row's own
            key_mask = mask[:, None, None, :]  # (B, 1, 1, S + T); the attention adds the causal part
            if state is None:  # a padding query sees itself: with no key at all its softmax, then every row, is NaN
                key_mask = key_mask | torch.eye(steps, dtype=torch.bool, device=ids.device)  # (B, 1, T, T)
        x = self.dropout(self._add_positions(self.embedding(ids), offset if positions is None else positions))  # (B, T, C)
        # a decoding step writes its keys/values into the cache's room (grown once from the prompt's)
        grown = None if state is None else [KVCache.growing(cache, ids.size(1), self.config.context)
                                            for cache in state.caches]
        if grown is not None and ids.size(1) == 1 and not (need_weights or self.training) and \
                (done := decode_blocks(list(self.blocks), x, key_mask, grown, positions)) is not None:
            x, caches = done  # every block in one kernel call (Llama's blocks with quantized layers)
            weights = [None] * len(caches)
        else:
            caches, weights = [], []
            for i, block in enumerate(self.blocks):
                cache = None if grown is None else {"self": grown[i]}
                x, extras = block(x, key_mask, causal=True, cache=cache, need_weights=need_weights, positions=positions)
                caches.append(extras["self"])
                weights.append(extras["self_weights"])
        if last_only:
            x = x[:, -1:]  # (B, 1, C): a prompt's other positions need no logits
        logits = self.head(self.norm(x))  # (B, T, V)
        if self.training and not need_weights:
            return logits, None, weights  # training never carries a cache
        tokens = ids if state is None else torch.cat([state.tokens, ids], dim=1)
        return logits, GPTState(tokens, caches, mask), weights

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
                if state.mask is not None:
                    raise ConfigError(f"a batch of rows at different positions cannot slide past the context of "
                                      f"{context}: generate such a sequence alone")
                kept = state.tokens[:, state.length - keep :]
                logits, state, _ = self._run(torch.cat([kept, chunk], dim=1), None)
                logits = logits[:, kept.size(1) :]
            else:
                logits, state, _ = self._run(chunk, state, last_only=last_only)
            pieces.append(logits)
        return (pieces[-1][:, -1:] if last_only else torch.cat(pieces, dim=1)), state

    def read_prompts(self, prompts: list[Tensor]) -> tuple[Tensor, GPTState]:
        """Prompts (P_i,) read together in one forward pass: each one's last-position logits (B, V) and the state
        `merge_states` would make of their states read alone (right-aligned rows, the mask marking each one's
        own positions; a padding column holds the finite keys/values of a padding token, masked out). Prompts
        longer than the context are refused (ConfigError): read such a prompt alone, with the sliding window.

            >>> logits, state = gpt.read_prompts([torch.tensor([1, 2, 3]), torch.tensor([4])])  # doctest: +SKIP
        """
        length = max(len(prompt) for prompt in prompts)
        self._check_context(length)
        ids = torch.cat([left_pad(prompt[None], length, 0) for prompt in prompts])  # (B, L)
        own = torch.cat([left_pad(prompt.new_ones(1, len(prompt), dtype=torch.bool), length, False) for prompt in prompts])
        logits, state, _ = self._run(ids, None, last_only=True, mask=own)
        return logits[:, -1], state

    def merge_states(self, states: list[GPTState]) -> GPTState:
        """One state with the rows of `states` in order (the shared contract of Folio's causal LMs for
        continuous batching, with `select_state`: see `folio.decoding.batching`)."""
        return GPTState.merge(states, self.config.context)

    def select_state(self, state: GPTState, rows: Tensor) -> GPTState:
        """The state of `rows` (R,) of a batch."""
        return state.select(rows, self.config.context)

    def reserve(self, state: GPTState, positions: int) -> GPTState:
        """`state` with its caches' room for `positions` in all (no more than the context) made now: a
        generation that knows its length reserves it once after reading the prompt."""
        return state.reserve(min(positions, self.config.context), self.config.context)

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
