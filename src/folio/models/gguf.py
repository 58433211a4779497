"""GGUF files (llama.cpp's format) read lazily: the header's metadata and where each tensor lies
(`read_gguf_stored`), each tensor read when asked (`StoredTensor`, with `pread`), and dequantized to float32 in
PyTorch for F32, F16, BF16, Q8_0, Q4_0 and Q4_1 (bit for bit what the `gguf` package's NumPy code gives, at a
fraction of its time); the other types the `gguf` package can dequantize (K-quants, IQ...) go through it.
Mapping a file's tensors onto a model is `folio.models.llama_weights`' business.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from folio.errors import CheckpointError, ConfigError

CHUNK_ROWS = 1024  # rows of a large tensor read and dequantized at a time (float32 of 576 columns: 2.4 MB)

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class StoredTensor:
    """A GGUF tensor where it lies in its file, read when asked (with `pread`, so a process that converts a
    model tensor by tensor holds neither the file's pages nor a float32 copy of the model)."""

    path: Path
    name: str
    offset: int  # of its first byte in the file
    qtype: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # PyTorch's order: (rows, columns) for a matrix

    @property
    def what(self) -> str:
        return f"{self.path}: tensor {self.name}"

    @property
    def row_bytes(self) -> int:
        import gguf

        block_size, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        return self.shape[-1] // block_size * type_size

    def raw(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The bytes of rows start..stop (all by default) as a flat uint8 array."""
        rows = math.prod(self.shape[:-1])
        stop = rows if stop is None else min(stop, rows)
        count = (stop - start) * self.row_bytes
        with self.path.open("rb") as file:
            data = os.pread(file.fileno(), count, self.offset + start * self.row_bytes)
        if len(data) != count:
            raise CheckpointError(f"{self.what} ends early: the file is truncated")
        return np.frombuffer(bytearray(data), dtype=np.uint8)

    def dequantize(self, start: int = 0, stop: int | None = None) -> Tensor:
        """Rows start..stop (all by default) in float32."""
        rows = math.prod(self.shape[:-1])
        stop = rows if stop is None else min(stop, rows)
        shape = (stop - start, self.shape[-1]) if len(self.shape) > 1 else self.shape
        return dequantize(self.raw(start, stop), self.qtype, shape, self.what)

    def row_chunks(self, rows: int = CHUNK_ROWS):
        """The float32 rows, `rows` at a time (a large matrix is never whole in float32)."""
        total = self.shape[0]
        return (self.dequantize(start, start + rows) for start in range(0, total, rows))

    def int8_parts(self, rows: int = CHUNK_ROWS) -> tuple[list[Tensor], Tensor]:
        """Q8_0 blocks as `folio.nn.quant.Int8Linear`'s, byte for byte: codes (int8 chunks of `rows` rows) and
        scale (rows, columns/32) float16. In chunks, so that the file's bytes and the layer's copy are never both
        whole."""
        codes, scales = [], []
        for start in range(0, self.shape[0], rows):
            blocks = torch.from_numpy(self.raw(start, start + rows)).view(-1, self.shape[1] // 32, 34)  # (r, n, 2 + 32)
            scales.append(blocks[..., :2].contiguous().view(torch.float16)[..., 0])  # (r, n)
            codes.append(blocks[..., 2:].contiguous().view(torch.int8).reshape(-1, self.shape[1]))
        return codes, torch.cat(scales)

    def int4_parts(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """Q4_0 or Q4_1 blocks as `folio.nn.quant.Int4Linear`'s (packed, scale, minimum), byte for byte (None for
        other types): Q4_1's d·q + m is scale d, minimum m; Q4_0's d·(q - 8) is minimum -8·d (exact in float16)."""
        name = self.qtype.name
        if name not in ("Q4_0", "Q4_1") or len(self.shape) != 2:
            return None
        blocks = torch.from_numpy(self.raw()).view(self.shape[0], -1, 18 if name == "Q4_0" else 20)  # (rows, n, bytes)
        scale = blocks[..., :2].contiguous().view(torch.float16)[..., 0]  # (rows, n)
        packed = (blocks[..., 2:] if name == "Q4_0" else blocks[..., 4:]).reshape(self.shape[0], -1)  # (rows, columns/2)
        if name == "Q4_0":
            return packed, scale, -8 * scale
        return packed, scale, blocks[..., 2:4].contiguous().view(torch.float16)[..., 0]


def read_gguf_stored(path: str | Path) -> tuple[dict[str, Any], dict[str, StoredTensor]]:
    """A GGUF file's metadata (field name → value: numbers, strings, lists) and its tensors as `StoredTensor`s,
    unread (their types and sizes checked against the file)."""
    path = Path(path)
    try:
        import gguf
    except ModuleNotFoundError as err:
        raise ConfigError("reading GGUF files needs the gguf package: pip install gguf") from err
    try:
        with path.open("rb") as file:
            magic = file.read(4)
            size = os.fstat(file.fileno()).st_size
            if magic != GGUF_MAGIC:
                raise CheckpointError(f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
            header = _GGUFHeader(file, path)
            metadata, infos = header.read()
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err
    alignment = int(metadata.get("general.alignment", 32))
    start = -(-header.position // alignment) * alignment  # the tensor data begins at the next multiple of the alignment
    tensors = {}
    for name, shape, type_id, offset in infos:
        what = f"{path}: tensor {name}"
        try:
            qtype = gguf.GGMLQuantizationType(type_id)
            block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{what} has the unknown GGML type {type_id}: re-quantize the model with llama.cpp's "
                                  "llama-quantize (Q4_0, Q4_1, Q8_0, F16...)") from err
        if qtype.name not in _DEQUANTIZERS:  # a type only the gguf package reads: probe it on one block now
            dequantize(np.zeros(type_size, np.uint8), qtype, (block_size,), what)
        count = math.prod(shape)
        if count % block_size or shape[-1] % block_size:
            raise CheckpointError(f"{what} has shape {shape}, not whole blocks of {block_size} {qtype.name} values")
        if start + offset + count // block_size * type_size > size:
            raise CheckpointError(f"{path} is truncated or damaged: tensor {name} ends past the end of the file")
        tensors[name] = StoredTensor(path, name, start + offset, qtype, shape)
    return metadata, tensors


class _GGUFHeader:
    """GGUF's header (versions 2 and 3, little-endian): key/value metadata, then each tensor's name, shape, type
    and offset. Read with `struct` in one pass: the `gguf` package's reader keeps a NumPy view per list item, a
    few hundred MB for a tokenizer's 100,000 strings."""

    _SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
    _STRING, _ARRAY = 8, 9

    def __init__(self, file, path: Path):
        file.seek(0)
        self.file, self.data, self.path, self.position = file, bytearray(), path, 4

    def _need(self, count: int) -> None:
        """Read on until `count` bytes past the position are in hand (the header only, never the tensors)."""
        while len(self.data) < self.position + count:
            chunk = self.file.read(max(1 << 20, self.position + count - len(self.data)))
            if not chunk:
                raise CheckpointError(f"{self.path} is truncated or damaged: its header ends early")
            self.data += chunk

    def _take(self, fmt: str):
        import struct

        size = struct.calcsize(fmt)
        self._need(size)
        value = struct.unpack_from(fmt, self.data, self.position)[0]
        self.position += size
        return value

    def _string(self) -> str:
        length = self._take("<Q")
        self._need(length)
        text = self.data[self.position : self.position + length].decode("utf-8", errors="replace")
        self.position += length
        return text

    def _value(self, type_id: int):
        if type_id == self._STRING:
            return self._string()
        if type_id == self._ARRAY:
            item_type, count = self._take("<I"), self._take("<Q")
            if item_type in self._SCALARS and item_type != 7:  # numbers: one NumPy read
                dtype = np.dtype(self._SCALARS[item_type])
                self._need(count * dtype.itemsize)
                values = np.frombuffer(bytes(self.data[self.position : self.position + count * dtype.itemsize]),
                                       dtype).tolist()
                self.position += count * dtype.itemsize
                return values
            return [self._value(item_type) for _ in range(count)]
        if type_id not in self._SCALARS:
            raise CheckpointError(f"{self.path} is damaged: metadata value type {type_id} is not GGUF's")
        return self._take(self._SCALARS[type_id])

    def read(self) -> tuple[dict[str, Any], list[tuple[str, tuple[int, ...], int, int]]]:
        version = self._take("<I")
        if version not in (2, 3):
            raise CheckpointError(f"{self.path}: GGUF version {version}; Folio reads versions 2 and 3 "
                                  "(a big-endian file reads as a huge version)")
        tensor_count, field_count = self._take("<Q"), self._take("<Q")
        metadata = {}
        for _ in range(field_count):
            key = self._string()
            metadata[key] = self._value(self._take("<I"))
        infos = []
        for _ in range(tensor_count):
            name = self._string()
            dims = [self._take("<Q") for _ in range(self._take("<I"))]
            infos.append((name, tuple(reversed(dims)), self._take("<I"), self._take("<Q")))  # PyTorch's order
        return metadata, infos


def _half(pairs: Tensor) -> Tensor:
    """(n, 2) bytes → (n, 1) float32: a little-endian float16 per row (a block's scale)."""
    return pairs.view(torch.float16).float()


def _nibbles(packed: Tensor) -> Tensor:
    """(n, 16) bytes → (n, 32) values 0..15: the low nibbles are a block's first 16 values, the high ones the rest."""
    return torch.cat([packed & 0x0F, packed >> 4], dim=1).float()


# GGML type name → its blocks as bytes (n, bytes per block) → their values (n, values per block) in float32.
# Blocks of 32 values: Q8_0 = float16 scale d, 32 int8 q: d·q. Q4_0 = d, 16 bytes of 4-bit q: d·(q - 8).
# Q4_1 = d, float16 minimum m, 16 bytes of q: d·q + m.
_DEQUANTIZERS: dict[str, Callable[[Tensor], Tensor]] = {
    "F32": lambda b: b.view(torch.float32),
    "F16": lambda b: b.view(torch.float16).float(),
    "BF16": lambda b: b.view(torch.bfloat16).float(),
    "Q8_0": lambda b: _half(b[:, :2]) * b[:, 2:].view(torch.int8).float(),
    "Q4_0": lambda b: _half(b[:, :2]) * (_nibbles(b[:, 2:]) - 8),
    "Q4_1": lambda b: _half(b[:, :2]) * _nibbles(b[:, 4:]) + _half(b[:, 2:4]),
}


def dequantize(raw: np.ndarray, qtype, shape: tuple[int, ...], what: str = "tensor") -> Tensor:
    """A GGUF tensor's bytes (a flat uint8 array) of GGML type `qtype` → float32 (shape). `what` names it in errors."""
    import gguf

    qtype = gguf.GGMLQuantizationType(qtype)
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    count = math.prod(shape)
    if count % block_size or raw.size != count // block_size * type_size:
        raise CheckpointError(f"{what} holds {raw.size} bytes, not the {count // block_size * type_size} of {shape} "
                              f"in {qtype.name}: the file is damaged")
    if qtype.name in _DEQUANTIZERS:
        blocks = torch.from_numpy(raw.copy()).view(-1, type_size)  # (n, bytes); a copy: the file is mapped read-only
        return _DEQUANTIZERS[qtype.name](blocks).reshape(shape)
    try:
        values = gguf.quants.dequantize(raw.reshape(-1, type_size), qtype)
    except NotImplementedError as err:
        supported = ", ".join(_DEQUANTIZERS)
        raise CheckpointError(f"{what} is stored as {qtype.name}, which Folio cannot dequantize (it reads {supported}, "
                              "K-quants and the other types of the gguf package): re-quantize the model with "
                              "llama.cpp's llama-quantize") from err
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(shape)
