"""Transformer layers: positional encodings, scaled dot-product and multi-head attention, blocks.

Masks follow Folio's convention (nn/masks.py): `True` = this key may be attended to. A mask broadcasts
against the scores (B, heads, T_query, T_key); a key-padding mask (B, S) becomes (B, 1, 1, S).

    >>> block = TransformerBlock(dim=16, heads=4, ff_dim=32)
    >>> x = torch.randn(2, 5, 16)
    >>> block(x, causal=True)[0].shape
    torch.Size([2, 5, 16])
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from folio.errors import ConfigError
from folio.nn.masks import causal_mask, masked_fill_scores

KVCache = tuple[Tensor, Tensor]  # keys, values: (B, kv_heads, S, head_dim), kv_heads = heads unless grouped


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """The book's (Vaswani et al.'s) table, (length, dim):

    PE[p, 2i] = sin(p / 10000^(2i/dim)),  PE[p, 2i+1] = cos(p / 10000^(2i/dim)).
    An odd `dim` keeps its last column a sine (there is no cosine partner for it).
    """
    positions = torch.arange(length, dtype=torch.float64)[:, None]  # (L, 1)
    even = torch.arange(0, dim, 2, dtype=torch.float64)  # the 2i values
    angles = positions / torch.pow(10000.0, even / dim)  # (L, ceil(dim/2))
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return table.float()


def _check_positions(offset: int, steps: int, max_len: int) -> None:
    if offset + steps > max_len:
        raise ConfigError(f"position {offset + steps - 1} is beyond the model's {max_len} positions")


class PositionalEncoding(nn.Module):
    """Adds position information to (B, T, C) embeddings: the fixed sinusoidal table or learned vectors.

    `offset` is the position of the first of the T tokens (non-zero when a key/value cache holds the
    tokens before them).
    """

    def __init__(self, dim: int, max_len: int, learned: bool = False):
        super().__init__()
        self.max_len = max_len
        self.learned = learned
        if learned:
            self.table = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        else:
            self.register_buffer("table", sinusoidal_positions(max_len, dim), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        steps = x.size(1)
        _check_positions(offset, steps, self.max_len)
        return x + self.table[offset : offset + steps].to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021, RoFormer; GPT-NeoX's half-split layout): each pair of
    query/key features (i, i + d/2) is rotated by an angle proportional to the position, so the score of
    a query and a key depends on their distance alone. Applied to (B, heads, T, head_dim), with `offset`
    the position of the first of the T rows (the length of a key/value cache).
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ConfigError(f"rotary positions need an even head size, got {head_dim}")
        self.max_len = max_len
        inverse = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (d/2,)
        angles = torch.arange(max_len, dtype=torch.float64)[:, None] * inverse  # (L, d/2)
        self.register_buffer("cos", angles.cos().repeat(1, 2).float(), persistent=False)  # (L, d)
        self.register_buffer("sin", angles.sin().repeat(1, 2).float(), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        steps = x.size(-2)
        _check_positions(offset, steps, self.max_len)
        cos, sin = (t[offset : offset + steps].to(x.dtype) for t in (self.cos, self.sin))
        first, second = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-second, first], dim=-1) * sin


def reference_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout: float = 0.0) -> tuple[Tensor, Tensor]:
    """softmax(q kᵀ / √d) v written out: (…, T, d), (…, S, d), (…, S, d) → output (…, T, d), weights (…, T, S)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (…, T, S)
    weights = masked_fill_scores(scores, mask).softmax(-1)
    return F.dropout(weights, dropout, training=dropout > 0) @ v, weights


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False, dropout: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Attention through `torch.nn.functional.scaled_dot_product_attention` (fused kernels), or through
    the plain reference path when the weights are wanted. `causal` aligns the last query with the last key,
    so it also holds when the keys include cached earlier positions (S >= T).
    """
    steps, keys = q.size(-2), k.size(-2)
    if causal and steps == 1:
        causal = False  # the newest query may see every key
    if causal and (need_weights or keys != steps or mask is not None):
        future = causal_mask(keys, q.device)[keys - steps :]  # (T, S): query i sits at key position S-T+i
        mask = future if mask is None else mask & future
        causal = False
    if need_weights:
        return reference_attention(q, k, v, mask, dropout)
    with _kernel_for(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal), None


def _kernel_for(q: Tensor):
    """PyTorch's fused CPU kernel has a slow bf16 backward: bf16 training on CPU takes the unfused path
    (1.14x faster for a whole GPT training step on one thread, bench/gpt_train_step.py)."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.requires_grad:
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class MultiHeadAttention(nn.Module):
    """Multi-head attention (self- or cross-), with an optional key/value cache for incremental decoding.

        out, weights, cache = mha(x)                               # self-attention
        out, weights, cache = mha(x, memory, mask=src_mask[:, None, None, :])   # cross-attention
        out, _, cache = mha(x_new, causal=True, cache=cache)      # one more step of a decoder

    Projections are named q_proj/k_proj/v_proj/out_proj, so foreign checkpoints map onto them one to one.

    `kv_heads` < `heads` is grouped-query attention (Ainslie et al. 2023; Llama 2/3, SmolLM2): `kv_heads`
    key/value heads, each read by heads/kv_heads query heads, so the cache holds only `kv_heads` heads.
    Rotary positions: `rotary_len` > 0 builds this layer's own table over that many positions; `rotary` passes
    a `RotaryEmbedding` that every layer shares (one table for a long context, and its own base).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True, rotary_len: int = 0,
                 kv_heads: int | None = None, rotary: RotaryEmbedding | None = None):
        super().__init__()
        kv_heads = kv_heads or heads
        if dim % heads:
            raise ConfigError(f"the model width {dim} must be divisible by the number of heads {heads}")
        if heads % kv_heads:
            raise ConfigError(f"the number of heads {heads} must be a multiple of the key/value heads {kv_heads}")
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.dropout = dropout
        if rotary is None and rotary_len:
            rotary = RotaryEmbedding(self.head_dim, rotary_len)
        self.rotary = rotary
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def _split(self, x: Tensor) -> Tensor:
        batch, steps, _ = x.shape
        return x.view(batch, steps, -1, self.head_dim).transpose(1, 2)  # (B, h or kv_heads, T, d)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None, KVCache]:
        """x (B, T, C); memory (B, S, C) for cross-attention. Returns output (B, T, C), weights
        (B, h, T, S) when asked, and the keys/values (to pass back as `cache`).

        Self-attention with a cache appends the new keys/values to it. Cross-attention with a cache
        reuses the cached projections of the memory, which do not change between decoder steps.
        """
        q = self._split(self.q_proj(x))
        if memory is not None and cache is not None:
            k, v = cache
        else:
            source = x if memory is None else memory
            k, v = self._split(self.k_proj(source)), self._split(self.v_proj(source))
            if self.rotary is not None and memory is None:
                offset = 0 if cache is None else cache[0].size(2)  # cached keys are rotated already
                q, k = self.rotary(q, offset), self.rotary(k, offset)
            if cache is not None:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)  # (B, kv_heads, S+T, d)
        dropout = self.dropout if self.training else 0.0
        group = self.heads // self.kv_heads  # query heads per key/value head: head i reads kv head i // group
        shared_k, shared_v = (k, v) if group == 1 else (k.repeat_interleave(group, 1), v.repeat_interleave(group, 1))
        out, weights = scaled_dot_product_attention(q, shared_k, shared_v, mask, causal, dropout, need_weights)
        batch, steps, _ = x.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, steps, -1)), weights, (k, v)  # (B, T, C)


class FeedForward(nn.Module):
    def __init__(self, dim: int, ff_dim: int, dropout: float = 0.0, activation: str = "gelu", bias: bool = True):
        super().__init__()
        if activation not in ("gelu", "relu"):
            raise ConfigError(f"activation {activation!r}: choose gelu, relu or swiglu")
        self.fc1 = nn.Linear(dim, ff_dim, bias=bias)
        self.fc2 = nn.Linear(ff_dim, dim, bias=bias)
        self.activation = F.gelu if activation == "gelu" else F.relu
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(x))))


class SwiGLU(nn.Module):
    """The gated feed-forward layer of Llama (Shazeer 2020, "GLU variants"): down(silu(gate(x)) ⊙ up(x))."""

    def __init__(self, dim: int, ff_dim: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.gate = nn.Linear(dim, ff_dim, bias=bias)
        self.up = nn.Linear(dim, ff_dim, bias=bias)
        self.down = nn.Linear(ff_dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(F.silu(self.gate(x)) * self.up(x)))  # (B, T, ff_dim) inside


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich 2019; Llama): x / rms(x) · weight, with no centring
    and no bias. Computed in float32 whatever the input's dtype, then cast back, as Llama's reference does."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        wide = x.float()
        return self.weight * (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class TransformerBlock(nn.Module):
    """Self-attention, optional cross-attention over a memory, and a feed-forward layer, each with a
    residual connection and LayerNorm: before the sub-layer (`norm_first`, pre-LN, as GPT-2) or after
    the residual sum (post-LN, as the original Transformer and BERT). Llama's block is the pre-LN one with
    `norm="rms"`, `activation="swiglu"`, `bias=False`, grouped-query `kv_heads` and a shared `rotary`.
    """

    def __init__(
        self, dim: int, heads: int, ff_dim: int, dropout: float = 0.0, norm_first: bool = True,
        cross_attention: bool = False, activation: str = "gelu", eps: float = 1e-5, rotary_len: int = 0,
        inner_dropout: float | None = None, norm: str = "layer", bias: bool = True, kv_heads: int | None = None,
        rotary: RotaryEmbedding | None = None,
    ):
        """`dropout` acts on each sub-layer's output before the residual sum; `inner_dropout` (default: the
        same) on the attention weights and the feed-forward layer's hidden units. `norm`: layer | rms;
        `bias`: whether the attention and feed-forward projections have biases."""
        super().__init__()
        if norm not in ("layer", "rms"):
            raise ConfigError(f"norm {norm!r}: choose layer or rms")
        inner = dropout if inner_dropout is None else inner_dropout
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(dim, heads, inner, bias, rotary_len, kv_heads, rotary)
        self.norm1 = self._norm(norm, dim, eps)
        self.cross_attn = MultiHeadAttention(dim, heads, inner, bias, kv_heads=kv_heads) if cross_attention else None
        self.norm_cross = self._norm(norm, dim, eps) if cross_attention else None
        self.ff = (SwiGLU(dim, ff_dim, inner, bias) if activation == "swiglu"
                   else FeedForward(dim, ff_dim, inner, activation, bias))
        self.norm2 = self._norm(norm, dim, eps)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def _norm(norm: str, dim: int, eps: float) -> nn.Module:
        return RMSNorm(dim, eps) if norm == "rms" else nn.LayerNorm(dim, eps=eps)

    def _sublayer(self, x: Tensor, norm: nn.Module, fn) -> tuple[Tensor, tuple]:
        out, *rest = fn(norm(x) if self.norm_first else x)
        x = x + self.dropout(out)
        return (x if self.norm_first else norm(x)), rest

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        causal: bool = False,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: dict | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, dict]:
        """x (B, T, C) → (B, T, C) and a dict with the new `self`/`cross` caches and, when asked,
        `self_weights`/`cross_weights` (B, h, T, S)."""
        cache = cache or {}
        x, (self_weights, self_cache) = self._sublayer(
            x, self.norm1, lambda h: self.self_attn(h, mask=mask, causal=causal, cache=cache.get("self"),
                                                    need_weights=need_weights))
        extras = {"self": self_cache, "self_weights": self_weights}
        if self.cross_attn is not None:
            if memory is None:
                raise ConfigError("this block has cross-attention: pass the encoder memory")
            x, (cross_weights, cross_cache) = self._sublayer(
                x, self.norm_cross, lambda h: self.cross_attn(h, memory, mask=memory_mask, cache=cache.get("cross"),
                                                              need_weights=need_weights))
            extras.update(cross=cross_cache, cross_weights=cross_weights)
        x, _ = self._sublayer(x, self.norm2, lambda h: (self.ff(h),))
        return x, extras


__all__ = [
    "FeedForward", "KVCache", "MultiHeadAttention", "PositionalEncoding", "RMSNorm", "RotaryEmbedding", "SwiGLU",
    "TransformerBlock",
    "reference_attention", "scaled_dot_product_attention", "sinusoidal_positions",
]
