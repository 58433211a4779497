"""Masks, with one convention everywhere in Folio: **`True` means "keep"** (a real token, a position
that may be attended to); `False` means padding or a position to ignore.

This is the opposite of `torch.nn.MultiheadAttention`'s `key_padding_mask` (where `True` means
"ignore"); convert with `~mask` only at the call into such an API, never at Folio's own boundaries.

    >>> lengths_to_mask(torch.tensor([3, 1]))
    tensor([[ True,  True,  True],
            [ True, False, False]])
"""

from __future__ import annotations

import torch
from torch import Tensor


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths → (B, max_len) bool mask, True on the first `lengths[b]` positions of row b."""
    max_len = int(lengths.max()) if max_len is None else max_len
    positions = torch.arange(max_len, device=lengths.device)
    return positions[None, :] < lengths[:, None]  # (B, T)


def padding_mask(ids: Tensor, pad_id: int) -> Tensor:
    """(B, T) ids → (B, T) bool mask, True where the id is not padding."""
    return ids != pad_id


def causal_mask(size: int, device: torch.device | None = None) -> Tensor:
    """(T, T) bool mask, True where query position i may attend to key position j (j <= i)."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


def masked_fill_scores(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Scores with masked-out (False) positions set to -inf, so a softmax gives them zero weight.

    `mask` broadcasts against `scores`. A row with no True position would give NaN after the softmax:
    callers pass masks with at least one kept position per row (every source has a token).
    """
    if mask is None:
        return scores
    return scores.masked_fill(~mask, float("-inf"))


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first `lengths[b]` steps, leaving its padding where it is. x: (B, T, C).

    The permutation is its own inverse, so applying it again restores the order.
    """
    steps = x.size(1)
    positions = torch.arange(steps, device=x.device).unsqueeze(0)  # (1, T)
    lengths = lengths.unsqueeze(1)  # (B, 1)
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)  # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))
