"""Weight-only quantized linear layers (blocks of 32 weights: int4 and int8, GGUF's formats), drop-ins for
`nn.Linear` in CPU inference.

A decoding step of a pretrained model reads every weight once for one row of arithmetic, so its speed is the
memory it reads: int4 weights are a seventh of float32's bytes. The products run Folio's own kernels
(`folio.nn.kernels`: AVX2, built at first use with the machine's C compiler), which dequantize each block in
registers and multiply in float32: the activations are never rounded, and the layer computes exactly the
product of its stored weight (up to float32's order of additions). Where the kernels cannot be built (no
compiler, no AVX2), the same weights are dequantized a chunk of rows at a time and multiplied by `F.linear`:
the same numbers, slower (`--dtype auto` then measures fp32 faster and takes it).

    >>> layer = Int4Linear.from_float(torch.randn(64, 96))
    >>> layer(torch.randn(2, 5, 96)).shape
    torch.Size([2, 5, 64])

Formats (w: a weight; per row, a (scale, ...) per block of 32 inputs, as float16):
* int4: w = scale·q + minimum, q in 0..15, 16 bytes a block: byte j holds q_j in its low nibble and q_(j+16) in
  its high one. GGUF's Q4_1 (w = d·q + m) is exactly this layout and is kept byte for byte
  (`Int4Linear(packed, scale, minimum)`); Q4_0 (w = d·(q - 8)) is minimum -8·d, exact in float16.
* int8: w = scale·q, q in -127..127: GGUF's Q8_0, byte for byte.
* From float weights (`from_float`: F16/F32 GGUF tensors, Hugging Face directories, `quantize_model`): int4 by
  Q4_1's rule, scale = (max - min)/15 and minimum = min of each block, |Δw| ≤ scale/2 (+ float16's rounding
  of the minimum, 2⁻¹¹ of it); int8 by Q8_0's, scale = max|w|/127 (rounded up to a float16), |Δw| ≤ scale/2.

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
from folio.nn import kernels
from folio.runtime import threads

GROUP = 32  # weights in a block (one scale): GGUF's block size
_CHUNK_ROWS = 1024  # rows quantized at a time: a large matrix is never whole in float32
GEMM_ROWS = 64  # from this many rows of input, a dequantized float32 product (PyTorch's GEMM): on an AMD EPYC
# (Zen 3, AVX2) the kernel's tiles of 8 rows were faster below ~100 rows on two threads, ~60 on one
_GEMM_CHUNK = 4096  # rows of a weight dequantized at a time for it (9 MB of a 576-wide head)
KINDS = ("int4", "int8")


class QuantizedLinear(nn.Module):
    """y = x Wᵀ + b with W stored quantized (buffers, no parameters: inference only). Input (..., in) of any
    float dtype, multiplied in float32; output (..., out) in float32, as llama.cpp keeps the activations."""

    kind = ""
    STORED: tuple[str, ...] = ()  # the buffers the kernel reads, in its arguments' order
    FUNCTION = DEQUANTIZE = ""  # the kernels' names in folio.nn.kernels' library
    BITS = 0  # the format's kind in the kernels' `folio_linear`

    def __init__(self, in_features: int, out_features: int, bias: Tensor | None):
        super().__init__()
        if in_features % GROUP:
            raise ConfigError(f"{self.kind} weights need a multiple of {GROUP} inputs, got {in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("bias", None if bias is None else bias.detach().float())

    def forward(self, x: Tensor) -> Tensor:
        # a decoding step makes ~120 of these calls: the kernels' path is written for few Python operations
        if x.dtype != torch.float32:
            x = x.float()
        library = kernels.load() if x.device.type == "cpu" and not x.requires_grad else None
        shape = x.shape
        rows = x.numel() // shape[-1]
        if library is not None and rows < GEMM_ROWS:  # decoding, short prompts: weights dequantized in registers
            if not x.is_contiguous():
                x = x.contiguous()
            y = x.new_empty(*shape[:-1], self.out_features)
            getattr(library, self.FUNCTION)(x.data_ptr(), rows, self.in_features, *self._pointers(),
                                            self.out_features, y.data_ptr(), kernels.threads())
        else:  # many rows (a prompt), or no kernels: float32 products of the weight a chunk of rows at a time
            x = x.reshape(rows, shape[-1])
            scratch = kernels.scratch(min(self.out_features, _GEMM_CHUNK) * self.in_features)
            parts = [F.linear(x, self.dequantized(start, start + _GEMM_CHUNK, scratch))
                     for start in range(0, self.out_features, _GEMM_CHUNK)]
            y = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)).view(*shape[:-1], self.out_features)
        bias = self._buffers["bias"]
        return y if bias is None else y.add_(bias)

    def _pointers(self) -> tuple[int | None, ...]:
        """The kernels' weight arguments: the stored buffers' addresses (read from the buffer table directly),
        None for an argument the format has not (int8's minimum)."""
        buffers = self._buffers
        return (*[buffers[name].data_ptr() for name in self.STORED], *(None,) * (3 - len(self.STORED)))

    def kernel_layer(self) -> kernels.Linear | None:
        """This layer as the kernels' `folio_linear` (its buffers' addresses: valid while they are), for kernels
        that run several layers in one call; None for a layer with a bias or off the CPU."""
        if self._buffers["bias"] is not None or self._buffers[self.STORED[0]].device.type != "cpu":
            return None
        return kernels.Linear(self.BITS, self.out_features, self.in_features, *self._pointers())

    def dequantized(self, start: int = 0, stop: int | None = None, out: Tensor | None = None) -> Tensor:
        """Rows start..stop (all by default) of the weight (out, in) in float32, as the layer computes with it;
        written into the front of `out` (a float32 buffer of at least that size) where it is given."""
        stop = self.out_features if stop is None else min(stop, self.out_features)
        library = kernels.load() if getattr(self, self.STORED[0]).device.type == "cpu" else None
        if library is None:
            return self._dequantized(start, stop)
        size = (stop - start) * self.in_features
        weight = (torch.empty(size) if out is None else out[:size]).view(stop - start, self.in_features)
        getattr(library, self.DEQUANTIZE)(*self._pointers(), start, stop, self.in_features, weight.data_ptr(),
                                          kernels.threads())
        return weight

    def _dequantized(self, start: int, stop: int) -> Tensor:
        raise NotImplementedError

    @classmethod
    def from_float(cls, weight: Tensor | Iterable[Tensor], bias: Tensor | None = None) -> QuantizedLinear:
        """Quantized from a float weight (out, in), or its chunks of rows (each freed as it is read)."""
        raise NotImplementedError

    @staticmethod
    def cat(layers: Sequence[QuantizedLinear]) -> QuantizedLinear | None:
        """One layer computing `layers`' outputs end to end (None where they cannot be joined); each of
        `layers` keeps working, its buffers becoming views of the joined ones so that memory is not doubled."""
        first = layers[0]
        if any(type(layer) is not type(first) or (layer.bias is None) != (first.bias is None) or
               layer.in_features != first.in_features for layer in layers):
            return None
        fused = first.__class__.__new__(first.__class__)
        QuantizedLinear.__init__(fused, first.in_features, sum(layer.out_features for layer in layers),
                                 None if first.bias is None else torch.cat([layer.bias for layer in layers]))
        for name in first.STORED:  # rows end to end; each part then reads its rows of the joined buffer
            fused.register_buffer(name, torch.cat([getattr(layer, name) for layer in layers]))
            start = 0
            for layer in layers:
                setattr(layer, name, getattr(fused, name)[start : start + layer.out_features])
                start += layer.out_features
        return fused

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


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


def _blocks(values: Tensor) -> Tensor:
    """(rows, in) → (rows, in/32, 1): a per-block value broadcast over its block's 32 weights."""
    return values.float().unsqueeze(-1)


class Int4Linear(QuantizedLinear):
    """w = scale·q + minimum per block of 32 weights of a row. `packed` (out, in/2) uint8 (byte j of a block:
    q_j low, q_(j+16) high: GGUF's Q4 order); `scale`, `minimum` (out, in/32) float16."""

    kind = "int4"
    STORED = ("packed", "scale", "minimum")
    FUNCTION, DEQUANTIZE = "folio_q4_matmul", "folio_q4_dequantize"
    BITS = 4

    def __init__(self, packed: Tensor | list[Tensor], scale: Tensor, minimum: Tensor, bias: Tensor | None = None):
        """`packed`: a tensor, or a list of chunks of rows (emptied as they are copied)."""
        packed = packed if isinstance(packed, Tensor) else _joined(packed)
        super().__init__(2 * packed.size(1), packed.size(0), bias)
        self.register_buffer("packed", packed.to(torch.uint8).contiguous())
        self.register_buffer("scale", scale.to(torch.float16).contiguous())
        self.register_buffer("minimum", minimum.to(torch.float16).contiguous())

    def codes(self, start: int = 0, stop: int | None = None) -> Tensor:
        """The 4-bit codes q (rows, in) of rows start..stop, uint8 0..15."""
        packed = self.packed[start:stop].view(-1, self.in_features // GROUP, GROUP // 2)
        return torch.cat([packed & 0x0F, packed >> 4], dim=-1).reshape(-1, self.in_features)

    def _dequantized(self, start: int, stop: int) -> Tensor:
        q = self.codes(start, stop).float().view(-1, self.in_features // GROUP, GROUP)
        weight = q * _blocks(self.scale[start:stop]) + _blocks(self.minimum[start:stop])
        return weight.reshape(-1, self.in_features)

    @classmethod
    def from_float(cls, weight, bias=None) -> Int4Linear:
        packed, scales, minimums = [], [], []
        for chunk in _chunks(weight):
            groups = chunk.float().reshape(chunk.size(0), -1, GROUP)  # (rows, in/32, 32)
            low, high = groups.amin(-1), groups.amax(-1)
            scale, minimum = ((high - low) / 15).half(), low.half()
            step = torch.where(scale > 0, scale.float(), torch.ones_like(low))
            q = ((groups - minimum.float()[..., None]) / step[..., None]).round_().clamp_(0, 15).to(torch.uint8)
            packed.append((q[..., : GROUP // 2] | (q[..., GROUP // 2 :] << 4)).reshape(chunk.size(0), -1))
            scales.append(scale)
            minimums.append(minimum)
        return cls(packed, torch.cat(scales), torch.cat(minimums), bias)


class Int8Linear(QuantizedLinear):
    """w = scale·q per block of 32 weights of a row (GGUF's Q8_0). `codes` (out, in) int8; `scale` (out, in/32)
    float16."""

    kind = "int8"
    STORED = ("codes", "scale")
    FUNCTION, DEQUANTIZE = "folio_q8_matmul", "folio_q8_dequantize"
    BITS = 8

    def __init__(self, codes: Tensor | list[Tensor], scale: Tensor, bias: Tensor | None = None):
        """`codes`: a tensor, or a list of chunks of rows (emptied as they are copied: a table is never twice)."""
        codes = codes if isinstance(codes, Tensor) else _joined(codes)
        super().__init__(codes.size(1), codes.size(0), bias)
        self.register_buffer("codes", codes.to(torch.int8).contiguous())
        self.register_buffer("scale", scale.to(torch.float16).contiguous())

    def _dequantized(self, start: int, stop: int) -> Tensor:
        return self.rows(torch.arange(start, stop))

    def rows(self, ids: Tensor) -> Tensor:
        """Dequantized rows `ids` (...,) → (..., in) in float32: an embedding lookup on this table."""
        codes = F.embedding(ids, self.codes).float().unflatten(-1, (-1, GROUP))  # (..., in/32, 32)
        return (codes * self.scale[ids].float().unsqueeze(-1)).flatten(-2)

    @classmethod
    def from_float(cls, weight, bias=None) -> Int8Linear:
        codes, scales = [], []
        for chunk in _chunks(weight):
            groups = chunk.float().reshape(chunk.size(0), -1, GROUP)
            # rounded up to a float16 (2⁻¹⁰ covers its rounding) so that no code passes 127: |Δw| ≤ scale/2
            scale = (groups.abs().amax(-1) / 127 * (1 + 2**-10)).half()
            step = torch.where(scale > 0, scale.float(), torch.ones_like(scale, dtype=torch.float32))
            codes.append((groups / step[..., None]).round_().clamp_(-127, 127).to(torch.int8).reshape(chunk.shape))
            scales.append(scale)
        return cls(codes, torch.cat(scales), bias)


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


def quantize_model(model: nn.Module, kind: str) -> nn.Module:
    """Swap every `nn.Linear` of `model` for a `QuantizedLinear` of `kind` (int4 | int8) quantized from its
    weights, in place; the other parameters stay as they are. Returns `model` (eval mode).

        >>> lm_model = quantize_model(Llama(LlamaConfig(vocab_size=64, hidden=64, heads=4, kv_heads=2, ff_hidden=128,
        ...                                             layers=2, context=32)), "int4")
    """
    if kind not in LINEAR_CLASSES:
        raise ConfigError(f"quantization kind {kind!r}: choose {' or '.join(KINDS)}")
    for owner in list(model.modules()):
        for name, child in list(owner.named_children()):
            if isinstance(child, nn.Linear):
                setattr(owner, name, LINEAR_CLASSES[kind].from_float(child.weight, child.bias))
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
    # on one thread, the count every machine runs well: two threads on a busy machine once timed int4 at 7.9 ms
    # against fp32's 0.8 (waiting on each other), and auto took fp32
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
