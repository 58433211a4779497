"""What the trainer reads from a task's data: the batch interface, written down once.

Every task's batches (language-model windows and streams, padded classification batches, feature
batches, translation pairs, captioned images) implement these two protocols; the trainer reads nothing
else from them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Batch(Protocol):
    """One training batch, as `model.loss(batch)` takes it."""

    # True on the first batch of a stateful stream: the carried state must start afresh (LM streams);
    # False for every other kind of batch.
    reset_state: bool

    def to(self, device: torch.device) -> Batch: ...

    @property
    def num_tokens(self) -> int:
        """Tokens (or items) the batch holds, for the throughput figure."""
        ...


@runtime_checkable
class TrainBatches(Protocol):
    """A training set addressable by (epoch, index), so that a resumed run continues at the same batch."""

    # True: the model's loss takes and returns a state carried from one batch to the next
    # (`model.loss(batch, state) -> (loss, state)`); False: `model.loss(batch) -> loss`.
    stateful: bool

    def __len__(self) -> int:
        """Batches per epoch (per process under torchrun)."""
        ...

    def batch(self, epoch: int, index: int) -> Batch: ...
