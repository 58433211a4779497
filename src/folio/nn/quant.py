"""Weight-only quantized linear layers (int4 groups of 32, int8 rows) for CPU inference, drop-ins for `nn.Linear`.

A decoding step of a pretrained model reads every weight once for one row of arithmetic, so its speed is the
memory it reads: int4 weights are an eighth of float32's bytes. The layers run PyTorch's CPU kernels
(`_weight_int4pack_mm_for_cpu`, `_weight_int8pack_mm`); both are fast with bfloat16 activations and many times
slower with float32 ones, so the activations are cast to `compute_dtype` (bfloat16) on the way in.

    >>> layer = Int4Linear.from_float(torch.randn(64, 96))
    >>> layer(torch.randn(2, 5, 96)).shape
    torch.Size([2, 5, 64])

Formats (w: a weight, per output row):
* int4: w = (q - 8) · scale + zero, q in 0..15, one (scale, zero) per group of 32 inputs: the kernel's own
  formula. GGUF's Q4_0 (w = d·(q - 8)) is scale d, zero 0; Q4_1 (w = d·q + m) is scale d, zero m + 8d: the
  blocks map onto it code for code (`Int4Linear(codes, scale, zero)`), no dequantize-and-requantize. The one
  rounding is of scale and zero to bfloat16 (8 bits of mantissa): |Δw| ≤ (|q - 8|·|d| + |zero|)·2⁻⁹, a small
  part of 4-bit quantization's own step d.
* int8: w = q · scale, q in -127..127, one scale per row. From float weights (`from_float`): the largest
  |w| of the row is 127 steps (the scale rounded up to one bfloat16 holds exactly), |Δw| ≤ scale / 2 ≈ max|w| / 254. GGUF's Q8_0 has a scale per 32 weights; re-cut
  to one per row, the error added is at most half a step of the row's widest block, the size of Q8_0's own
  rounding there.
* int4 from float weights (`from_float`, e.g. F16 GGUF tensors or a Hugging Face directory): per group of 32,
  Q4_1's rule: scale = (max - min)/15, zero = min + 8·scale, so |Δw| ≤ scale/2 = (max - min)/30.

`quantize_model(model, kind)` swaps every `nn.Linear` of a model for one of these; `fastest_kind` measures which
weight format runs a decoding step fastest on this CPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import ConfigError
from folio.runtime import threads

GROUP = 32  # inputs per int4 (scale, zero) pair: GGUF's block size
_ROW_MULTIPLE = 16  # the int4 kernel wants a multiple of 16 output rows: others are padded
_PACK_ROWS = 64  # its packed rows are independent in blocks of 32 (AVX2) or 64 rows: joined layers keep to those
_CHUNK_ROWS = 1024  # rows quantized at a time: a large matrix is never whole in float32 (1024 rows of 576: 2.4 MB)
KINDS = ("int4", "int8")


class QuantizedLinear(nn.Module):
    """y = x Wᵀ + b with W stored quantized (buffers, no parameters: inference only). Input (..., in) of any
    float dtype, cast to `compute_dtype` for the kernel; output (..., out) in float32, as llama.cpp keeps every
    activation but the quantized product's input: a bfloat16 residual stream and cache changed SmolLM2's greedy
    text on most prompts."""

    kind = ""

    def __init__(self, in_features: int, out_features: int, bias: Tensor | None, compute_dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features, self.compute_dtype = in_features, out_features, compute_dtype
        self.register_buffer("bias", None if bias is None else bias.detach().float())

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.size(-1))
        if rows.dtype != self.compute_dtype:
            rows = rows.to(self.compute_dtype)
        y = self._matmul(rows).float()  # (rows, out)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)

    def _matmul(self, rows: Tensor) -> Tensor:
        raise NotImplementedError

    def dequantized(self) -> Tensor:
        """The weight (out, in) in float32, as the layer computes with it."""
        raise NotImplementedError

    @classmethod
    def from_float(cls, weight: Tensor | Iterable[Tensor], bias: Tensor | None = None,
                   compute_dtype: torch.dtype = torch.bfloat16) -> QuantizedLinear:
        raise NotImplementedError

    @staticmethod
    def cat(layers: Sequence[QuantizedLinear]) -> QuantizedLinear | None:
        """One layer computing `layers`' outputs end to end (None where they cannot be joined); each of
        `layers` keeps working, its buffers becoming views of the joined ones so that memory is not doubled."""
        first = layers[0]
        if any(type(layer) is not type(first) or (layer.bias is None) != (first.bias is None) or
               layer.in_features != first.in_features for layer in layers):
            return None
        return type(first)._cat(layers)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"compute_dtype={self.compute_dtype}")


def _chunks(weight: Tensor | Iterable[Tensor]) -> Iterable[Tensor]:
    if isinstance(weight, Tensor):
        return weight.detach().split(_CHUNK_ROWS)
    return weight


def _joined(chunks: list[Tensor]) -> Tensor:
    """The chunks end to end, each freed as it is copied (`torch.cat` would hold every chunk and the whole)."""
    whole = torch.empty(sum(c.size(0) for c in chunks), *chunks[0].shape[1:], dtype=chunks[0].dtype)
    start = 0
    while chunks:
        chunk = chunks.pop(0)
        whole[start : start + chunk.size(0)] = chunk
        start += chunk.size(0)
    return whole


class Int4Linear(QuantizedLinear):
    """Groups of 32 weights of a row with a (scale, zero) each: w = (q - 8)·scale + zero. `codes` (out, in)
    integers 0..15; `scale`, `zero` (out, in/32)."""

    kind = "int4"

    def __init__(self, codes: Tensor, scale: Tensor, zero: Tensor, bias: Tensor | None = None,
                 compute_dtype: torch.dtype = torch.bfloat16):
        out_features, in_features = codes.shape
        if in_features % GROUP:
            raise ConfigError(f"int4 weights need a multiple of {GROUP} inputs, got {in_features}")
        super().__init__(in_features, out_features, bias, compute_dtype)
        pad = -out_features % _ROW_MULTIPLE
        pairs = torch.stack([scale, zero], dim=-1).to(compute_dtype)  # (out, in/32, 2)
        pairs = F.pad(pairs, (0, 0, 0, 0, 0, pad))
        # packed a block of rows at a time (the kernel packs rows independently), so that the int32 codes it
        # wants are never whole: a (49152, 576) table's would be 113 MB
        packed = torch.empty(out_features + pad, in_features // 2, dtype=torch.uint8)  # (N, in/2)
        for start in range(0, out_features + pad, _CHUNK_ROWS):
            chunk = codes[start : start + _CHUNK_ROWS].to(torch.int32)
            if chunk.size(0) < min(_CHUNK_ROWS, out_features + pad - start):  # the padded rows at the end
                chunk = F.pad(chunk, (0, 0, 0, min(_CHUNK_ROWS, out_features + pad - start) - chunk.size(0)), value=8)
            packed[start : start + chunk.size(0)] = torch.ops.aten._convert_weight_to_int4pack_for_cpu(chunk, 1)
        self.register_buffer("packed", packed)
        self.register_buffer("scale_zero", pairs.transpose(0, 1).contiguous())  # (in/32, N, 2): the kernel's layout

    def _matmul(self, rows: Tensor) -> Tensor:
        pairs = self.scale_zero if self.scale_zero.is_contiguous() else self.scale_zero.contiguous()  # a joined part's
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, GROUP, pairs)
        return y if y.size(1) == self.out_features else y[:, : self.out_features]

    def dequantized(self) -> Tensor:
        eye = torch.eye(self.in_features, dtype=self.compute_dtype)
        scale, zero = self.scale_zero.float().unbind(-1)  # (in/32, N)
        # the codes through the kernel itself: the identity with scale 1, zero 0 gives q - 8 (exact in bfloat16)
        unit = torch.stack([torch.ones_like(scale), torch.zeros_like(zero)], -1).to(self.compute_dtype)
        codes = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.packed, GROUP, unit.contiguous()).float().t()
        weight = codes * scale.t().repeat_interleave(GROUP, 1) + zero.t().repeat_interleave(GROUP, 1)
        return weight[: self.out_features]

    @classmethod
    def from_float(cls, weight, bias=None, compute_dtype=torch.bfloat16) -> Int4Linear:
        codes, scales, zeros = [], [], []
        for chunk in _chunks(weight):
            groups = chunk.float().reshape(chunk.size(0), -1, GROUP)  # (rows, in/32, 32)
            low, high = groups.amin(-1), groups.amax(-1)
            scale = (high - low) / 15
            step = torch.where(scale > 0, scale, torch.ones_like(scale))
            codes.append(((groups - low[..., None]) / step[..., None]).round_().clamp_(0, 15).to(torch.uint8)
                         .reshape(chunk.shape))
            scales.append(scale)
            zeros.append(low + 8 * scale)
        return cls(_joined(codes), torch.cat(scales), torch.cat(zeros), bias, compute_dtype)

    @classmethod
    def _cat(cls, layers: Sequence[Int4Linear]) -> Int4Linear | None:
        if any(layer.out_features % _PACK_ROWS for layer in layers):
            return None  # the parts' packed rows would not line up (or padded rows land between them)
        fused = cls.__new__(cls)
        QuantizedLinear.__init__(fused, layers[0].in_features, sum(layer.out_features for layer in layers),
                                 None if layers[0].bias is None else torch.cat([layer.bias for layer in layers]),
                                 layers[0].compute_dtype)
        fused.register_buffer("packed", torch.cat([layer.packed for layer in layers]))
        fused.register_buffer("scale_zero", torch.cat([layer.scale_zero for layer in layers], dim=1))
        start = 0
        for layer in layers:  # the parts read the joined memory (the packed rows are independent of each other)
            end = start + layer.out_features
            layer.packed = fused.packed[start:end]
            layer.scale_zero = fused.scale_zero[:, start:end]
            start = end
        return fused


class Int8Linear(QuantizedLinear):
    """w = q·scale, `codes` (out, in) int8, with `scale` (out,): one per row, one kernel call; or (out, in/32): one
    per block of 32, GGUF's Q8_0 kept exact (a model's output layer, whose logits pick greedy tokens: re-cut to
    row scales, SmolLM2's head changed greedy text on most prompts). Per block, the kernel runs once per block
    column and the blocks' sums are scaled and added in float32: as fast on a (49152, 576) head, for the same
    bytes read."""

    kind = "int8"

    def __init__(self, codes: Tensor | list[Tensor], scale: Tensor, bias: Tensor | None = None,
                 compute_dtype: torch.dtype = torch.bfloat16):
        """`codes`: a tensor, or a list of chunks of rows (emptied as they are copied: a table is never twice)."""
        chunks = [codes] if isinstance(codes, Tensor) else codes
        out_features, in_features = sum(c.size(0) for c in chunks), chunks[0].size(1)
        super().__init__(in_features, out_features, bias, compute_dtype)
        if scale.dim() == 2:  # per block: codes as (in/32, out, 32), each block column one contiguous kernel weight
            codes, start = torch.empty(in_features // GROUP, out_features, GROUP, dtype=torch.int8), 0
            while chunks:
                chunk = chunks.pop(0)
                codes[:, start : start + chunk.size(0)] = chunk.reshape(chunk.size(0), -1, GROUP).transpose(0, 1)
                start += chunk.size(0)
            self.register_buffer("unit", torch.ones(out_features, dtype=compute_dtype))
            scale = scale.float().t()  # (in/32, out)
        else:
            codes, scale = (codes if isinstance(codes, Tensor) else _joined(chunks)), scale.to(compute_dtype)
        self.register_buffer("codes", codes.to(torch.int8).contiguous())
        self.register_buffer("scale", scale.contiguous())

    @property
    def blockwise(self) -> bool:
        return self.codes.dim() == 3

    def _matmul(self, rows: Tensor) -> Tensor:
        if not self.blockwise:
            return torch.ops.aten._weight_int8pack_mm(rows, self.codes, self.scale)
        y = rows.new_zeros(rows.size(0), self.out_features, dtype=torch.float32)
        for block, (codes, scale) in enumerate(zip(self.codes, self.scale, strict=True)):
            part = rows[:, block * GROUP : (block + 1) * GROUP].contiguous()
            y.addcmul_(torch.ops.aten._weight_int8pack_mm(part, codes, self.unit), scale)
        return y

    def dequantized(self) -> Tensor:
        return self.rows(torch.arange(self.out_features))

    def rows(self, ids: Tensor) -> Tensor:
        """Dequantized rows `ids` (...,) → (..., in) in float32: an embedding lookup on this table."""
        if not self.blockwise:
            return F.embedding(ids, self.codes).float() * self.scale[ids].float().unsqueeze(-1)
        codes = self.codes[:, ids].movedim(0, -2).float()  # (..., in/32, 32)
        return (codes * self.scale[:, ids].movedim(0, -1).unsqueeze(-1)).flatten(-2)

    @classmethod
    def from_float(cls, weight, bias=None, compute_dtype=torch.bfloat16) -> Int8Linear:
        codes, scales = [], []
        for chunk in _chunks(weight):
            chunk = chunk.float()
            # the scale the kernel will read (compute_dtype), rounded up so no code passes 127: |Δw| ≤ its half
            scale = (chunk.abs().amax(1) / 127 * (1 + 2**-8)).to(compute_dtype).float()
            step = torch.where(scale > 0, scale, torch.ones_like(scale))
            codes.append((chunk / step[:, None]).round_().clamp_(-127, 127).to(torch.int8))
            scales.append(scale)
        return cls(_joined(codes), torch.cat(scales), bias, compute_dtype)

    @classmethod
    def _cat(cls, layers: Sequence[Int8Linear]) -> Int8Linear | None:
        if any(layer.blockwise for layer in layers):
            return None
        bias = None if layers[0].bias is None else torch.cat([layer.bias for layer in layers])
        fused = cls(torch.cat([layer.codes for layer in layers]), torch.cat([layer.scale for layer in layers]), bias,
                    layers[0].compute_dtype)
        start = 0
        for layer in layers:
            end = start + layer.out_features
            layer.codes, layer.scale = fused.codes[start:end], fused.scale[start:end]
            start = end
        return fused


class QuantizedEmbedding(nn.Module):
    """A token embedding that reads its rows from an `Int8Linear`'s table (a tied output layer's), dequantizing
    only the rows looked up: no second copy of the largest matrix of a small model."""

    def __init__(self, table: Int8Linear):
        super().__init__()
        self.table = table
        self.num_embeddings, self.embedding_dim = table.out_features, table.in_features

    def forward(self, ids: Tensor) -> Tensor:
        return self.table.rows(ids)  # (..., dim)


LINEAR_CLASSES: dict[str, type[QuantizedLinear]] = {"int4": Int4Linear, "int8": Int8Linear}


def quantize_model(model: nn.Module, kind: str, compute_dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Swap every `nn.Linear` of `model` for a `QuantizedLinear` of `kind` (int4 | int8) quantized from its
    weights, in place (`compute_dtype`: the kernels' input type); the other parameters stay as they are (float32:
    the activations between the quantized products too). Returns `model` (eval mode).

        >>> lm_model = quantize_model(Llama(LlamaConfig(vocab_size=64, hidden=64, heads=4, kv_heads=2, ff_hidden=128,
        ...                                             layers=2, context=32)), "int4")
    """
    if kind not in LINEAR_CLASSES:
        raise ConfigError(f"quantization kind {kind!r}: choose {' or '.join(KINDS)}")
    for owner in list(model.modules()):
        for name, child in list(owner.named_children()):
            if isinstance(child, nn.Linear):
                setattr(owner, name, LINEAR_CLASSES[kind].from_float(child.weight, child.bias, compute_dtype))
    return model.eval()


# --- choosing the fastest format -------------------------------------------------------------------------------


def _best_seconds(fn, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def memory_bandwidth(megabytes: int = 32) -> float:
    """Bytes per second one thread moves from memory (copying a buffer larger than the caches, best of 3: source
    and copy together twice a 32 MB L3 cache, and no more, since this runs in every `--dtype auto` load)."""
    source = torch.ones(megabytes << 18)  # float32: megabytes·2²⁰ bytes
    target = torch.empty_like(source)
    seconds = _best_seconds(lambda: target.copy_(source), repeats=3)
    return 2 * source.numel() * 4 / seconds  # read and written


def fastest_kind(candidates: Sequence[str], rows: int, columns: int, bandwidth: float | None = None) -> tuple[str, dict]:
    """Of `candidates` (fp32 | bf16 | int4 | int8), the weight format with the fastest one-row product of a
    (rows, columns) matrix on this CPU, as a decoding step runs it: each format's product timed on a weight
    in cache, and held to no less than its weight's bytes over the memory bandwidth (in a step of a model
    larger than the caches every weight comes from memory). Returns the kind and the estimates (seconds).

        >>> fastest_kind(["fp32", "int4"], 3072, 576)      # doctest: +SKIP
        ('int4', {'fp32': 0.00064, 'int4': 0.00047})
    """
    weight = torch.randn(rows, columns) * 0.02
    estimates = {}
    # on one thread, as one stream decodes (`folio.tasks.lm.inference.decode_threads`): two threads on a busy
    # machine once timed int4 at 7.9 ms against fp32's 0.8 (waiting on each other), and auto took fp32
    with torch.inference_mode(), threads(1):
        bandwidth = bandwidth or memory_bandwidth()
        for kind in candidates:
            if kind in LINEAR_CLASSES:
                layer = LINEAR_CLASSES[kind].from_float(weight)
                x, size = torch.randn(1, columns), sum(b.numel() * b.element_size() for b in layer.buffers())
            else:
                dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[kind]
                layer = nn.Linear(columns, rows, bias=False, dtype=dtype)
                x, size = torch.randn(1, columns, dtype=dtype), rows * columns * torch.finfo(dtype).bits // 8
            estimates[kind] = max(_best_seconds(lambda: layer(x)), size / bandwidth)  # noqa: B023 (called here)
    return min(estimates, key=estimates.get), estimates


__all__ = ["GROUP", "Int4Linear", "Int8Linear", "QuantizedEmbedding", "QuantizedLinear", "fastest_kind",
           "memory_bandwidth", "quantize_model"]
