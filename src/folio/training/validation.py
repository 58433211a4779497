"""Validation figures shared by the tasks whose models learn to emit token sequences."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def teacher_forced_loss(model: nn.Module, batches: Iterable, pad_id: int, **loss_options) -> float:
    """Mean loss per target token of `model` over teacher-forced batches (translation, captions).

    Each batch has `.to(device)` and `tgt_out` (B, T), `pad_id` where there is no token;
    `model.loss(batch, reduction="sum", **loss_options)` sums the tokens' losses, so every token weighs
    the same whatever the batch sizes (a mean of batch means would not).

        >>> loss = teacher_forced_loss(model, [batch], PAD, label_smoothing=0.0)  # doctest: +SKIP
    """
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in batches:
        batch = batch.to(device)
        total += model.loss(batch, reduction="sum", **loss_options).item()
        count += int((batch.tgt_out != pad_id).sum())
    return total / max(count, 1)
