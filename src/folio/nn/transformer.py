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
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from folio.errors import ConfigError
from folio.nn.masks import causal_mask, masked_fill_scores

_TORCH = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
_SDPA_GQA = _TORCH >= (2, 5)  # scaled_dot_product_attention(enable_gqa=...): grouped heads without copies
_FUSED_RMS_NORM = _TORCH >= (2, 4)  # F.rms_norm


class KVCache:
    """A self-attention key/value cache that grows in place, for step-by-step decoding.

    Keys and values live in buffers (B, kv_heads, capacity, head_dim) with room for later positions, so a
    step writes its new positions into the room instead of copying the whole cache (`torch.cat`: O(S) per
    step, O(S²) over a text); the capacity doubles when it runs out. It reads as the (keys, values) pair of
    (B, kv_heads, S, head_dim) views it stands for:

        >>> cache = KVCache.growing((torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4)))
        >>> keys, values = cache.extend(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
        >>> keys.shape, keys[0, 0, -1, 0].item()
        (torch.Size([1, 2, 6, 4]), 1.0)

    Extending writes past this cache's length in the shared buffers, so of two continuations of one cache
    only the last extended stays valid: decoding and evaluation never branch a cache (beam search reorders
    plain (keys, values) pairs with `index_select`, which copies).
    """

    __slots__ = ("_keys", "_values", "length", "limit")

    def __init__(self, keys: Tensor, values: Tensor, length: int, limit: int | None = None):
        self._keys, self._values, self.length = keys, values, length  # buffers (B, kv_heads, capacity, d)
        self.limit = limit

    @classmethod
    def growing(cls, cache: KVCache | tuple[Tensor, Tensor], room: int = 1, limit: int | None = None) -> KVCache:
        """`cache` as a growing cache with room for at least `room` more positions (itself if it is one);
        `limit`: the most positions it will ever hold (a model's context), so the doubling stops there."""
        if isinstance(cache, KVCache):
            return cache
        keys, values = cache
        length = keys.size(2)
        capacity = max(min(max(2 * length, 64), limit or 1 << 62), length + room)
        buffers = [t.new_empty(*t.shape[:2], capacity, t.size(3)) for t in (keys, values)]
        for buffer, t in zip(buffers, (keys, values), strict=True):
            buffer[:, :, :length] = t
        return cls(*buffers, length, limit)

    def extend(self, keys: Tensor, values: Tensor) -> KVCache:
        """The cache with `keys`/`values` (B, kv_heads, T, d) appended after this one's positions."""
        end = self.length + keys.size(2)
        if end > self._keys.size(2):  # out of room: double (the views handed out keep the old buffers)
            grown = KVCache.growing((self.keys, self.values), room=keys.size(2), limit=self.limit)
            return grown.extend(keys, values)
        self._keys[:, :, self.length : end] = keys
        self._values[:, :, self.length : end] = values
        return KVCache(self._keys, self._values, end, self.limit)

    def truncate(self, length: int) -> KVCache:
        """The cache of the first `length` positions (the later ones are overwritten by the next `extend`)."""
        return KVCache(self._keys, self._values, min(length, self.length), self.limit)

    @property
    def keys(self) -> Tensor:
        return self._keys[:, :, : self.length]  # (B, kv_heads, S, d)

    @property
    def values(self) -> Tensor:
        return self._values[:, :, : self.length]

    def __iter__(self):
        return iter((self.keys, self.values))

    def __getitem__(self, index: int) -> Tensor:
        return (self.keys, self.values)[index]

    def __len__(self) -> int:
        return 2


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


def _position_rows(table: Tensor, offset: int | Tensor, steps: int) -> Tensor:
    """The rows of a per-position `table` (L, D) for `steps` positions from `offset`: (T, D) for an int offset, or
    (B, T, D) for per-row positions (B, T) (the rows of a batch of generations sit at different positions)."""
    if isinstance(offset, Tensor):
        _check_positions(int(offset.max()), 1, table.size(0))
        return table[offset]
    _check_positions(offset, steps, table.size(0))
    return table[offset : offset + steps]


class PositionalEncoding(nn.Module):
    """Adds position information to (B, T, C) embeddings: the fixed sinusoidal table or learned vectors.

    `offset` is the position of the first of the T tokens (non-zero when a key/value cache holds the
    tokens before them), or each token's own position (B, T).
    """

    def __init__(self, dim: int, max_len: int, learned: bool = False):
        super().__init__()
        self.max_len = max_len
        self.learned = learned
        if learned:
            self.table = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        else:
            self.register_buffer("table", sinusoidal_positions(max_len, dim), persistent=False)

    def forward(self, x: Tensor, offset: int | Tensor = 0) -> Tensor:
        return x + _position_rows(self.table, offset, x.size(1)).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021, RoFormer; GPT-NeoX's half-split layout): each pair of
    query/key features (i, i + d/2) is rotated by an angle proportional to the position, so the score of
    a query and a key depends on their distance alone. Applied to (B, heads, T, head_dim), with `offset`
    the position of the first of the T rows (the length of a key/value cache), or each row's positions (B, T).
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ConfigError(f"rotary positions need an even head size, got {head_dim}")
        self.max_len = max_len
        # on the CPU even where the model is built on the meta device (a pretrained model's loader): the tables
        # are not in its file, and meta cos/sin would import PyTorch's Python decompositions (70 MB)
        inverse = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device="cpu") / head_dim)  # (d/2,)
        angles = torch.arange(max_len, dtype=torch.float64, device="cpu")[:, None] * inverse  # (L, d/2)
        self.half = head_dim // 2
        self.register_buffer("cos", angles.cos().repeat(1, 2).float(), persistent=False)  # (L, d)
        # (-sin, sin): x rotated is x·cos + (-x₂, x₁)·sin = x·cos + roll(x, d/2)·(-sin, sin), bit for bit, in
        # four operations where the chunk/negate/concatenate form takes six
        sin = angles.sin()
        self.register_buffer("signed_sin", torch.cat([-sin, sin], dim=1).float(), persistent=False)  # (L, d)

    def forward(self, x: Tensor, offset: int | Tensor = 0) -> Tensor:
        steps = x.size(-2)
        cos, sin = _position_rows(self.cos, offset, steps), _position_rows(self.signed_sin, offset, steps)  # (T, d)
        if cos.dim() == 3:  # per-row positions: (B, T, d) → (B, 1, T, d), the same for every head
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        if cos.dtype != x.dtype:
            cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return x * cos + x.roll(self.half, dims=-1) * sin


def fuse_linears(owner: nn.Module, names: tuple[str, ...]) -> tuple[Tensor, Tensor | None]:
    """One weight (sum of the outputs, inputs) and bias holding the weights and biases of `owner`'s linear
    layers `names` end to end, so that one matrix product does the work of several (for inference: see
    `fuse_projections`).

    Each layer's parameters become views of the fused tensors (their `.data`): memory is not doubled, and
    loading or training the layers keeps the fused copy current. A state-dict hook hands out copies of the views,
    so a checkpoint of a fused model is written as usual (safetensors refuses tensors that share memory).
    """
    linears = [getattr(owner, name) for name in names]
    weight = torch.cat([linear.weight.detach() for linear in linears])  # (Σ out, in)
    bias = None if linears[0].bias is None else torch.cat([linear.bias.detach() for linear in linears])
    start = 0
    for linear in linears:
        rows = linear.weight.size(0)
        linear.weight.data = weight[start : start + rows]
        if bias is not None:
            linear.bias.data = bias[start : start + rows]
        start += rows

    def copy_views(module, state, prefix, _metadata):
        for name in names:
            for kind in ("weight", "bias"):
                key = f"{prefix}{name}.{kind}"
                if key in state:
                    state[key] = state[key].clone()

    owner.register_state_dict_post_hook(copy_views)
    return weight, bias


def fused_linear(owner: nn.Module, names: tuple[str, ...]) -> Callable[[Tensor], Tensor] | None:
    """x → the outputs of `owner`'s linear layers `names` end to end, in one product: `F.linear` on the weights
    `fuse_linears` joins, or for quantized layers (`folio.nn.quant`) one quantized layer of them all (None where
    they cannot be joined: the layers then run one by one)."""
    from folio.nn.quant import QuantizedLinear

    layers = [getattr(owner, name) for name in names]
    if all(isinstance(layer, QuantizedLinear) for layer in layers):
        return QuantizedLinear.cat(layers)
    if not all(isinstance(layer, nn.Linear) for layer in layers):
        return None
    weight, bias = fuse_linears(owner, names)
    return partial(F.linear, weight=weight, bias=bias)


def _fused_path(fused: Callable | None, layer: nn.Module) -> bool:
    """Whether a layer runs its fused product: it has one and no gradient is wanted for its parameters (a
    quantized layer has none)."""
    weight = getattr(layer, "weight", None)
    return fused is not None and not (weight is not None and weight.requires_grad and torch.is_grad_enabled())


def fuse_projections(model: nn.Module) -> nn.Module:
    """Fuse, in every attention layer of `model`, the query/key/value projections into one matrix product, and
    in every SwiGLU layer the gate and up projections: fewer, larger products per decoding step, where a step of
    a pretrained model is a long chain of small operations. The parameters keep their names and values (they
    become views of the fused matrices); the fused path runs where no gradient is wanted for them. Returns
    `model`.

        >>> lm_model = fuse_projections(Llama.from_pretrained("smollm2"))     # doctest: +SKIP
    """
    for module in model.modules():
        if isinstance(module, (MultiHeadAttention, SwiGLU)):
            module.fuse()
    return model


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
    if steps == 1 and mask is None and q.dim() == 4 and q.dtype in (torch.bfloat16, torch.float16) and \
            q.device.type == "cpu" and not q.requires_grad:
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
        if memory is None and _fused_path(self.qkv, self.q_proj):
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
        qkv = self.qkv(x).view(batch, steps, heads + 2 * kv_heads, self.head_dim)
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


def _rotary_offset(cache: KVCache | tuple | None, positions: Tensor | None) -> int | Tensor:
    """Where new queries and keys sit: `positions` when given, else after the cached keys (rotated already)."""
    if positions is not None:
        return positions
    return 0 if cache is None else cache[0].size(2)


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
        self.gate_up_weight: Tensor | None = None  # set by fuse(): (2 ff_dim, dim)
        self.gate_up_bias: Tensor | None = None
        self.gate_up = None  # set by fuse(): x → the gate and up projections end to end

    def fuse(self) -> None:
        """One matrix product for the gate and up projections (see `fuse_projections`)."""
        if self.gate_up is None:
            self.gate_up = fused_linear(self, ("gate", "up"))
            if isinstance(self.gate_up, partial):
                self.gate_up_weight, self.gate_up_bias = self.gate_up.keywords["weight"], self.gate_up.keywords["bias"]

    def forward(self, x: Tensor) -> Tensor:
        if _fused_path(self.gate_up, self.gate):
            gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, T, ff_dim) each
            return self.down(self.dropout(F.silu(gate) * up))
        return self.down(self.dropout(F.silu(self.gate(x)) * self.up(x)))  # (B, T, ff_dim) inside


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich 2019; Llama): x / rms(x) · weight, with no centring
    and no bias. Computed in float32 whatever the input's dtype, then cast back, as Llama's reference does."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if _FUSED_RMS_NORM and x.dtype == torch.float32 == self.weight.dtype:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # one kernel, the same bits
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
        x = x + (self.dropout(out) if self.training else out)
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
        positions: Tensor | None = None,
    ) -> tuple[Tensor, dict]:
        """x (B, T, C) → (B, T, C) and a dict with the new `self`/`cross` caches and, when asked,
        `self_weights`/`cross_weights` (B, h, T, S). `positions` (B, T): rotary positions per row."""
        cache = cache or {}
        x, (self_weights, self_cache) = self._sublayer(
            x, self.norm1, lambda h: self.self_attn(h, mask=mask, causal=causal, cache=cache.get("self"),
                                                    need_weights=need_weights, positions=positions))
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
    "TransformerBlock", "fuse_linears", "fuse_projections",
    "reference_attention", "scaled_dot_product_attention", "sinusoidal_positions",
]
