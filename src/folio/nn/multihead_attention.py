"""Scaled dot-product attention (fused kernels, a written-out reference path, fast one-query CPU paths) and
multi-head self- and cross-attention with grouped-query heads, rotary positions and a key/value cache.

Masks follow Folio's convention (nn/masks.py): `True` = this key may be attended to. A mask broadcasts
against the scores (B, heads, T_query, T_key); a key-padding mask (B, S) becomes (B, 1, 1, S).
"""

from __future__ import annotations

import contextlib
import math
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from folio.errors import ConfigError
from folio.nn import kernels
from folio.nn.fused import fused_linear, fused_path
from folio.nn.kv_cache import KVCache
from folio.nn.masks import causal_mask, masked_fill_scores
from folio.nn.positions import RotaryEmbedding

_TORCH = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
_SDPA_GQA = _TORCH >= (2, 5)  # scaled_dot_product_attention(enable_gqa=...): grouped heads without copies


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

    Grouped-query attention: `k` and `v` may have fewer heads than `q` (B, kv_heads, S, d), each read by
    heads/kv_heads consecutive query heads; they are not copied out to every query head where PyTorch's
    kernels take them as they are.
    """
    group = q.size(1) // k.size(1) if q.dim() == 4 and k.size(1) != q.size(1) else 1  # (B, heads, T, d) only
    if group > 1 and (need_weights or not _SDPA_GQA):
        k, v = k.repeat_interleave(group, -3), v.repeat_interleave(group, -3)  # (B, heads, S, d)
        group = 1
    steps, keys = q.size(-2), k.size(-2)
    if causal and steps == 1:
        causal = False  # the newest query may see every key
    if causal and (need_weights or keys != steps or mask is not None):
        future = causal_mask(keys, q.device)[keys - steps :]  # (T, S): query i sits at key position S-T+i
        mask = future if mask is None else mask & future
        causal = False
    if need_weights:
        return reference_attention(q, k, v, mask, dropout)
    if steps == 1 and q.dim() == 4 and q.device.type == "cpu" and not q.requires_grad and dropout == 0:
        if q.dtype == torch.float32 and (out := _one_query_kernel(q, k, v, mask)) is not None:
            return out, None
        if mask is None and q.dtype in (torch.bfloat16, torch.float16):
            return _one_query_attention(q, k, v, group), None
    if group > 1:
        with _kernel_for(q):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal,
                                                  enable_gqa=True), None
    with _kernel_for(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal), None


def _one_query_attention(q: Tensor, k: Tensor, v: Tensor, group: int) -> Tensor:
    """A decoding step's attention (one query per head, bf16/fp16 on CPU) as two products in float32: PyTorch's
    fused CPU kernel takes 650 µs for it over 512 bf16 keys where this takes 140 (and holds the scores in
    float32 as that kernel does). q (B, heads, 1, d); k, v (B, kv_heads, S, d) → (B, heads, 1, d)."""
    batch, heads, _, dim = q.shape
    grouped = q.reshape(batch, heads // group, group, dim).float()  # (B, kv_heads, group, d): a group's queries
    weights = (grouped @ k.float().transpose(-2, -1)).mul_(dim ** -0.5).softmax(-1)  # (B, kv_heads, group, S)
    return (weights @ v.float()).to(q.dtype).view(batch, heads, 1, dim)


def _one_query_kernel(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor | None:
    """A float32 decoding step's attention by Folio's own kernel (`decode_step.c`): PyTorch's fused CPU
    kernel spends ~150 µs on 8 rows of SmolLM2's 9 heads over 120 cached keys, this ~60-70. q (B, heads, 1, d);
    k, v (B, kv_heads, S, d), views of a cache's buffers as they are; mask None or a key mask (B, 1, 1, S).
    None where the kernel does not take these shapes (the caller then runs PyTorch's)."""
    library = kernels.load()
    batch, heads, _, dim = q.shape
    keys = k.size(-2)
    if library is None or dim % 8 or k.dim() != 4 or k.shape != v.shape or k.size(0) != batch or \
            k.dtype != torch.float32 or v.dtype != torch.float32:
        return None
    if (mask := _kernel_mask(mask, batch, keys)) is False:
        return None
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = q.new_empty(batch, heads, 1, dim)
    failed = library.folio_attend_one(q.data_ptr(), k.data_ptr(), v.data_ptr(), None if mask is None else mask.data_ptr(),
                                      batch, heads, k.size(1), keys, dim, *q.stride()[:2], *k.stride()[:3],
                                      *v.stride()[:3], dim**-0.5, out.data_ptr(), kernels.threads())
    return None if failed else out


def _kernel_mask(mask: Tensor | None, batch: int, keys: int) -> Tensor | None | bool:
    """A key mask (B, 1, 1, S) as the kernels read it, (B, S) contiguous; None for none; False for a mask they do
    not take (another shape or dtype)."""
    if mask is None:
        return None
    if mask.dtype != torch.bool or mask.shape != (batch, 1, 1, keys):
        return False
    return mask.reshape(batch, keys).contiguous()


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
        self.qkv_weight: Tensor | None = None  # set by fuse(): (heads + 2 kv_heads) · head_dim rows
        self.qkv_bias: Tensor | None = None
        self.qkv = None  # set by fuse(): x → the three projections end to end

    def fuse(self) -> None:
        """One matrix product for the query, key and value projections (see `fuse_projections`)."""
        if self.qkv is None:
            self.qkv = fused_linear(self, ("q_proj", "k_proj", "v_proj"))
            if isinstance(self.qkv, partial):
                self.qkv_weight, self.qkv_bias = self.qkv.keywords["weight"], self.qkv.keywords["bias"]

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
        positions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, KVCache]:
        """x (B, T, C); memory (B, S, C) for cross-attention. Returns output (B, T, C), weights
        (B, h, T, S) when asked, and the keys/values (to pass back as `cache`). `positions` (B, T): each
        query's rotary position where the rows of a batch sit at different ones (default: after the cache).

        Self-attention with a cache appends the new keys/values to it: a `KVCache` in place (and is
        returned), a (keys, values) pair by concatenation. Cross-attention with a cache reuses the cached
        projections of the memory, which do not change between decoder steps.
        """
        if memory is None and fused_path(self.qkv, self.q_proj):
            return self._fused_self_attention(x, mask, causal, cache, need_weights, positions)
        q = self._split(self.q_proj(x))
        if memory is not None and cache is not None:
            k, v = cache
        else:
            source = x if memory is None else memory
            k, v = self._split(self.k_proj(source)), self._split(self.v_proj(source))
            if self.rotary is not None and memory is None:
                offset = _rotary_offset(cache, positions)
                q, k = self.rotary(q, offset), self.rotary(k, offset)
            if isinstance(cache, KVCache):
                cache = cache.extend(k, v)
                k, v = cache  # (B, kv_heads, S+T, d)
            elif cache is not None:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)  # (B, kv_heads, S+T, d)
        dropout = self.dropout if self.training else 0.0
        # grouped query heads: head i reads key/value head i // (heads / kv_heads)
        out, weights = scaled_dot_product_attention(q, k, v, mask, causal, dropout, need_weights)
        batch, steps, _ = x.shape
        new_cache = cache if isinstance(cache, KVCache) else (k, v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, steps, -1)), weights, new_cache  # (B, T, C)

    def _fused_self_attention(self, x: Tensor, mask: Tensor | None, causal: bool, cache: KVCache | tuple | None,
                              need_weights: bool, positions: Tensor | None) -> tuple[Tensor, Tensor | None, KVCache | tuple]:
        """`forward`'s self-attention with the fused projections, in as few operations as it takes: one product
        for q, k and v, and one rotation for q and k together."""
        batch, steps, _ = x.shape
        heads, kv_heads = self.heads, self.kv_heads
        qkv = self.qkv(x)
        if steps == 1 and isinstance(cache, KVCache) and self.rotary is not None and not need_weights and \
                (done := self._decode_attend(qkv, mask, cache, positions)) is not None:
            out, cache = done
            return self.out_proj(out.view(batch, 1, -1)), None, cache
        qkv = qkv.view(batch, steps, heads + 2 * kv_heads, self.head_dim)
        qkv = qkv.transpose(1, 2)  # (B, heads + 2 kv_heads, T, d): the query heads, the key heads, the value heads
        qk, v = qkv[:, : heads + kv_heads], qkv[:, heads + kv_heads :]
        if self.rotary is not None:
            qk = self.rotary(qk, _rotary_offset(cache, positions))
        q, k = qk[:, :heads], qk[:, heads:]
        if isinstance(cache, KVCache):
            cache = cache.extend(k, v)
            k, v = cache  # (B, kv_heads, S+T, d)
        elif cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        out, weights = scaled_dot_product_attention(q, k, v, mask, causal, self.dropout if self.training else 0.0,
                                                    need_weights)
        new_cache = cache if isinstance(cache, KVCache) else (k, v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, steps, -1)), weights, new_cache  # (B, T, C)

    def _decode_attend(self, qkv: Tensor, mask: Tensor | None, cache: KVCache,
                       positions: Tensor | None) -> tuple[Tensor, KVCache] | None:
        """A decoding step's attention after the fused projection qkv (B, 1, (heads + 2 kv_heads)·d) in one call
        of Folio's kernel (`folio_decode_attend`): the rotation of the new query and key heads, their keys and
        values written into the cache, and the attention over it, where eager PyTorch takes some fifteen
        operations. Returns (B, heads, d) and the cache with the new position; None where the kernel does not
        take these inputs (the caller then takes the operations' path)."""
        batch, dim = qkv.size(0), self.head_dim
        if not qkv.is_contiguous() or (library := kernels.for_inputs(qkv)) is None or \
                (inputs := self.decode_inputs(batch, mask, cache, positions)) is None:
            return None
        arguments, mask, cache = inputs  # (mask: kept alive through the call)
        q, out = qkv.new_empty(batch, self.heads, dim), qkv.new_empty(batch, self.heads, dim)
        failed = library.folio_decode_attend(qkv.data_ptr(), batch, self.heads, self.kv_heads, dim, qkv.stride(0),
                                             *arguments, dim**-0.5, q.data_ptr(), out.data_ptr(), kernels.threads())
        return None if failed else (out, cache.advanced(1))

    def decode_inputs(self, batch: int, mask: Tensor | None, cache: KVCache,
                      positions: Tensor | None) -> tuple[tuple, Tensor | None, KVCache] | None:
        """What the decoding kernels (`folio_decode_attend`, `folio_decode_blocks`) read of one new position of
        each of `batch` rows besides its projections: (the rotary tables' rows and their stride over B, the
        cache's buffers and strides, the new position, the key mask's), the key mask (B, S) they read (or None),
        and the cache with room for the position, which the kernel writes (`advanced(1)` then holds it). None
        where the kernels do not take these inputs (the operations' path does). The addresses are valid while
        the cache and that mask are."""
        if self.rotary is None or self.head_dim % 16 or (mask := _kernel_mask(mask, batch, cache.length + 1)) is False:
            return None
        cos, sin = self.rotary._rows(_rotary_offset(cache, positions), 1, torch.float32)  # (1, d) or (B, 1, 1, d)
        k, v = cache.buffers  # (B, kv_heads, capacity, d); a grown cache's are laid out alike
        if cos.stride(-1) != 1 or cos.stride() != sin.stride() or k.dtype != torch.float32 or k.stride(-1) != 1 or \
                v.stride(-1) != 1 or k.size(0) != batch:
            return None
        cache = cache.with_room(1)
        k, v = cache.buffers
        return (cos.data_ptr(), sin.data_ptr(), cos.stride(0) if cos.dim() == 4 else 0, k.data_ptr(), v.data_ptr(),
                *k.stride()[:3], *v.stride()[:3], cache.length, None if mask is None else mask.data_ptr()), mask, cache


def _rotary_offset(cache: KVCache | tuple | None, positions: Tensor | None) -> int | Tensor:
    """Where new queries and keys sit: `positions` when given, else after the cached keys (rotated already)."""
    if positions is not None:
        return positions
    if isinstance(cache, KVCache):
        return cache.length
    return 0 if cache is None else cache[0].size(2)
