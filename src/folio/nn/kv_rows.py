"""Key/value caches of a batch whose rows sit at different positions (continuous batching: generations that
started at different times share each step).

Each row's positions are right-aligned in the batch's S columns: a row of n positions fills the last n, and a
key mask (B, S) marks them (True = keep). Every row then writes its next position into the same column, so a
step extends the cache just as single-sequence decoding does (`KVCache.extend`), and the attention needs only
the mask, with each row's own positions (its count of True) for the position encodings.

    >>> a = (torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))    # one row of 3 positions
    >>> b = (torch.ones(2, 2, 5, 4), torch.ones(2, 2, 5, 4))    # two rows of 5
    >>> cache = stack_right_aligned([a, b], length=5)
    >>> cache.keys.shape, cache.keys[0, 0, :, 0].tolist()
    (torch.Size([3, 2, 5, 4]), [0.0, 0.0, 1.0, 1.0, 1.0])
"""

from __future__ import annotations

import torch
from torch import Tensor

from folio.nn.kv_cache import KVCache


def left_pad(rows: Tensor, length: int, value: bool | int) -> Tensor:
    """(B, S) → (B, length): `value` in the first length - S columns, `rows` right-aligned after them."""
    pad = rows.new_full((rows.size(0), length - rows.size(1)), value)
    return torch.cat([pad, rows], dim=1)


def stack_right_aligned(parts: list[tuple[Tensor, Tensor]], length: int, limit: int | None = None) -> KVCache:
    """The (keys, values) of several batches, each (B_i, kv_heads, S_i ≤ length, d), as one growing cache
    (Σ B_i, kv_heads, length, d) with every row right-aligned and room for more positions (up to `limit`, a
    model's context). The columns before a row's positions hold zeros: masked out, they must still be finite
    numbers (a masked score is -inf, but 0 · NaN in the weighted sum is NaN)."""
    keys, values = parts[0]
    rows = sum(part[0].size(0) for part in parts)
    capacity = max(min(max(2 * length, 64), limit or 1 << 62), length + 1)
    buffers = [t.new_zeros(rows, t.size(1), capacity, t.size(3)) for t in (keys, values)]
    start = 0
    for part in parts:
        end = start + part[0].size(0)
        for buffer, t in zip(buffers, part, strict=True):
            buffer[start:end, :, length - t.size(2) : length] = t
        start = end
    return KVCache(*buffers, length, limit)


def select_rows(cache: KVCache | tuple[Tensor, Tensor], rows: Tensor, start: int, limit: int | None = None) -> KVCache:
    """The cache of the batch's `rows` (R,) without its first `start` positions (columns none of them uses)."""
    keys, values = cache
    return stack_right_aligned([(keys.index_select(0, rows)[:, :, start:], values.index_select(0, rows)[:, :, start:])],
                               keys.size(2) - start, limit)


__all__ = ["left_pad", "select_rows", "stack_right_aligned"]
