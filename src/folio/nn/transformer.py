"""The Transformer block: self-attention, optional cross-attention and a feed-forward layer with residual
connections and pre- or post-LN; and `fuse_projections` for inference. Its layers live beside it in nn/:
`multihead_attention` (scaled dot-product and multi-head attention), `positions` (sinusoidal, learned and
rotary), `kv_cache` (`KVCache`), `feedforward` (`FeedForward`, `SwiGLU`), `norms` (`RMSNorm`) and `fused`
(linear layers joined into one product).

Masks follow Folio's convention (nn/masks.py): `True` = this key may be attended to. A mask broadcasts
against the scores (B, heads, T_query, T_key); a key-padding mask (B, S) becomes (B, 1, 1, S).

    >>> block = TransformerBlock(dim=16, heads=4, ff_dim=32)
    >>> x = torch.randn(2, 5, 16)
    >>> block(x, causal=True)[0].shape
    torch.Size([2, 5, 16])
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor, nn

from folio.errors import ConfigError
from folio.nn import kernels
from folio.nn.feedforward import FeedForward, SwiGLU
from folio.nn.kv_cache import KVCache
from folio.nn.multihead_attention import MultiHeadAttention
from folio.nn.norms import RMSNorm
from folio.nn.positions import RotaryEmbedding
from folio.runtime import low_peak_memory


def fuse_projections(model: nn.Module) -> nn.Module:
    """Fuse, in every attention layer of `model`, the query/key/value projections into one matrix product, and
    in every SwiGLU layer the gate and up projections: fewer, larger products per decoding step, where a step of
    a pretrained model is a long chain of small operations. The parameters keep their names and values (they
    become views of the fused matrices); the fused path runs where no gradient is wanted for them. Returns
    `model`.

        >>> lm_model = fuse_projections(Llama.from_pretrained("smollm2"))     # doctest: +SKIP
    """
    with low_peak_memory():  # each fused matrix replaces its parts, whose room goes back (a quantized SmolLM2: 8 MB)
        for module in model.modules():
            if isinstance(module, (MultiHeadAttention, SwiGLU)):
                module.fuse()
    return model


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
        self._kernel_block: tuple | None = None  # (the quantized layers, the kernel's block, the tensors it reads)

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

    def _kernel_layers(self) -> kernels.Block | None:
        """This block as `folio_decode_blocks` reads it, or None where it is not Llama's (pre-norm RMSNorm, rotary
        self-attention, SwiGLU) with fused quantized projections and no biases. Kept while the four quantized
        layers are the same modules: moving the block (`to`) or loading weights into it drops it (`_apply`,
        `_load_from_state_dict`), and it holds the tensors it points to, so that it never points to freed memory."""
        from folio.nn.quant import QuantizedLinear

        attention, ff = self.self_attn, self.ff
        linears = (attention.qkv, attention.out_proj, getattr(ff, "gate_up", None), ff.down if isinstance(ff, SwiGLU)
                   else None)
        kept = self._kernel_block
        if kept is not None and kept[0] == linears:
            return kept[1]
        if not (self.norm_first and self.cross_attn is None and isinstance(self.norm1, RMSNorm) and
                isinstance(self.norm2, RMSNorm) and attention.rotary is not None and
                all(isinstance(linear, QuantizedLinear) for linear in linears)):
            return None
        layers = [linear.kernel_layer() for linear in linears]
        norms = (self.norm1.weight.detach(), self.norm2.weight.detach())
        dim, head_dim = norms[0].numel(), attention.head_dim
        if None in layers or any(n.dtype != torch.float32 or n.device.type != "cpu" or not n.is_contiguous()
                                 for n in norms) or dim % 8 or head_dim % 16 or ff.down.in_features % 8:
            return None
        block = kernels.Block(*layers, norms[0].data_ptr(), norms[1].data_ptr(), self.norm1.eps, self.norm2.eps,
                              head_dim**-0.5, dim, attention.heads, attention.kv_heads, head_dim, ff.down.in_features)
        tensors = [*norms, *(linear._buffers[name] for linear in linears for name in linear.STORED)]
        self._kernel_block = (linears, block, tensors)
        return block

    def _apply(self, fn, recurse=True):
        self._kernel_block = None  # the weights may move
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        self._kernel_block = None  # (`assign=True` replaces tensors)
        super()._load_from_state_dict(*args, **kwargs)


def decode_blocks(blocks: list[TransformerBlock], x: Tensor, mask: Tensor | None, caches: list[KVCache],
                  positions: Tensor | None) -> tuple[Tensor, list[KVCache]] | None:
    """A decoding step (x (B, 1, C), each row's new position) through `blocks` one after another, each with its
    cache, in one call of Folio's kernel (`folio_decode_blocks`), where the blocks are Llama's with quantized
    layers (`TransformerBlock._kernel_layers`): their ~20 operations a block, each of which would start the CPU's
    threads anew, in one parallel region, with the same numbers. Returns the last block's output and the caches
    with the new position; None where the kernel does not take these blocks or inputs (nothing is written), and
    for as many rows as the quantized layers multiply by float32 GEMM (`folio.nn.quant.GEMM_ROWS`), faster there
    than the kernel's tiles of 8 rows."""
    from folio.nn.quant import GEMM_ROWS

    if not blocks or x.size(0) >= GEMM_ROWS or (library := kernels.for_inputs(x)) is None:
        return None
    layers = []
    for block in blocks:
        if (layer := block._kernel_layers()) is None:
            return None
        layers.append(layer)
    attention = blocks[0].self_attn
    if (inputs := attention.decode_inputs(x.size(0), mask, caches[0], positions)) is None:
        return None
    arguments, mask, first = inputs  # (mask: kept alive through the call)
    keys, values = first.buffers
    layout = (keys.stride(), values.stride(), keys.shape, values.shape, keys.dtype, values.dtype)
    grown = [first]
    for block, cache in zip(blocks[1:], caches[1:], strict=True):
        # the other blocks read the same rotary rows at the same position, into caches laid out as the first's
        if block.self_attn.rotary is not attention.rotary or cache.length != first.length:
            return None
        cache = cache.with_room(1)
        k, v = cache.buffers
        if (k.stride(), v.stride(), k.shape, v.shape, k.dtype, v.dtype) != layout:
            return None
        grown.append(cache)
    if not x.is_contiguous():
        x = x.contiguous()
    y, batch, count = torch.empty_like(x), x.size(0), len(blocks)
    widest = max(2 * b.C + (b.H + 2 * b.KVH) * b.D + 2 * b.H * b.D + 3 * b.F for b in layers)
    pointers = (ctypes.c_void_p * count)(*map(ctypes.addressof, layers))
    buffers = [cache.buffers for cache in grown]
    key_buffers = (ctypes.c_void_p * count)(*(k.data_ptr() for k, _ in buffers))
    value_buffers = (ctypes.c_void_p * count)(*(v.data_ptr() for _, v in buffers))
    # (arguments: the rotary rows and their stride, the first cache's buffers, the strides, the position, the mask)
    if library.folio_decode_blocks(pointers, count, x.data_ptr(), batch, *arguments[:3], key_buffers, value_buffers,
                                   *arguments[5:], kernels.scratch(batch * widest).data_ptr(), y.data_ptr(),
                                   kernels.threads()):
        return None
    return y, [cache.advanced(1) for cache in grown]
