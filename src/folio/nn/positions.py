"""Positions for Transformer layers: the sinusoidal table, learned vectors (`PositionalEncoding`, added to the
embeddings) and rotary positions (`RotaryEmbedding`, applied to queries and keys)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from folio.errors import ConfigError
from folio.nn import kernels


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
        self._last: tuple | None = None  # (offset, steps, dtype, table, cos, sin) of the last call: see _rows

    def forward(self, x: Tensor, offset: int | Tensor = 0) -> Tensor:
        cos, sin = self._rows(offset, x.size(-2), x.dtype)
        if x.dim() == 4 and x.stride(-1) == 1 and x.size(-1) % 16 == 0 and cos.stride() == sin.stride() and \
                cos.stride(-1) == 1 and (library := kernels.for_inputs(x, cos, sin)) is not None:
            # Folio's kernel (decode_step.c): one pass, not five operations
            out = x.new_empty(x.shape)
            library.folio_rope(x.data_ptr(), *x.shape, *x.stride()[:3], cos.data_ptr(), sin.data_ptr(),
                               cos.stride(0) if cos.dim() == 4 else 0, cos.stride(-2), out.data_ptr())
            return out
        return x * cos + x.roll(self.half, dims=-1) * sin

    def _rows(self, offset: int | Tensor, steps: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The cos and signed sin rows of these positions, (T, d) or (B, 1, T, d). Every layer of a model shares
        one table and asks for the same positions in a step: the last answer is kept (a batch's per-row
        positions are one tensor that all layers get, so it is recognised by identity)."""
        last = self._last
        if last is not None and last[1] == steps and last[2] == dtype and last[3] is self.cos and (
                last[0] is offset or (isinstance(offset, int) and isinstance(last[0], int) and last[0] == offset)):
            return last[4], last[5]
        cos, sin = _position_rows(self.cos, offset, steps), _position_rows(self.signed_sin, offset, steps)  # (T, d)
        if cos.dim() == 3:  # per-row positions: (B, T, d) → (B, 1, T, d), the same for every head
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        if cos.dtype != dtype:
            cos, sin = cos.to(dtype), sin.to(dtype)
        self._last = (offset, steps, dtype, self.cos, cos, sin)
        return cos, sin
