"""Classification batches: id lists → padded, length-bucketed batches (and precomputed feature vectors).

Tokenizers (cleaning, words, subwords, BPE, pretrained) live in `folio.tokenizers`; every one that pads
uses id 0 (`PAD_ID`), so a mask is `ids != PAD_ID`.

* `pad_sequences`: id lists → ids (B, T) and mask (B, T), right-padded.
* `ClassificationBatches`: length-bucketed, padded batches addressable by (epoch, index), so a resumed
  run continues at the same batch. Masks are `True` where a token is real ("keep").
* `FeatureBatches`: shuffled batches of fixed vectors from a frozen encoder.

    >>> ids, mask = pad_sequences([[3, 4], [5]])
    >>> ids.tolist(), mask.tolist()
    ([[3, 4], [5, 0]], [[True, True], [True, False]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from folio.errors import ConfigError, DataError
from folio.tokenizers import PAD_ID


# ---- batches -----------------------------------------------------------------------------------
@dataclass
class ClassificationBatch:
    ids: torch.Tensor  # (B, T) int64, PAD_ID after each sequence's end
    mask: torch.Tensor  # (B, T) bool, True = a real token ("keep")
    labels: torch.Tensor  # (B,) int64
    segments: torch.Tensor | None = None  # (B, T) int64 for pairs of texts: 0 first text, 1 second (0 padding)
    reset_state = False  # a class attribute, not a field: no state is carried across these batches

    def to(self, device: torch.device) -> ClassificationBatch:
        segments = None if self.segments is None else self.segments.to(device)
        return ClassificationBatch(self.ids.to(device), self.mask.to(device), self.labels.to(device), segments)

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())


def pad_sequences(sequences: Sequence[Sequence[int]], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists with PAD_ID to `length` (default: the longest). Returns ids (B, T) and mask (B, T)."""
    longest = max((len(s) for s in sequences), default=0)
    length = max(longest, 1) if length is None else length
    if length < longest:
        raise ConfigError(f"cannot pad sequences of {longest} tokens to {length}")
    ids = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return ids, ids != PAD_ID


class ClassificationBatches:
    """Shuffled, length-bucketed batches: each epoch's order is a pure function of (seed, epoch).

    Reviews are shuffled, then sorted by length within pools of `pool` batches, so a batch holds
    reviews of similar length (little padding) while batches still arrive in random order.
    Every sequence must be non-empty. `segments` (one list per sequence, of its length): pairs of texts,
    0 for the first text's positions and 1 for the second's; batches then carry them, padded with 0.
    """

    stateful = False

    def __init__(self, sequences: Sequence[Sequence[int]], labels: Sequence[int], batch_size: int,
                 seed: int = 0, pool: int = 50, rank: int = 0, world_size: int = 1,
                 segments: Sequence[Sequence[int]] | None = None):
        if len(sequences) != len(labels):
            raise DataError(f"{len(sequences)} texts but {len(labels)} labels")
        self.segments = None if segments is None else list(segments)
        if len(sequences) < batch_size * world_size:
            raise DataError(f"{len(sequences)} training texts are fewer than one batch of {batch_size * world_size}")
        self.sequences, self.labels = list(sequences), torch.as_tensor(list(labels), dtype=torch.long)
        self.lengths = torch.tensor([len(s) for s in self.sequences])
        if (self.lengths == 0).any():
            raise DataError("a training text has no tokens after cleaning")
        self.batch_size, self.seed, self.pool = batch_size, seed, pool
        self.rank, self.world_size = rank, world_size
        self._plan: tuple[int, list[torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.sequences) // (self.batch_size * self.world_size)

    def _batches_of(self, epoch: int) -> list[torch.Tensor]:
        if self._plan is None or self._plan[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.sequences), generator=generator)
            global_batch = self.batch_size * self.world_size
            order = order[: len(self) * global_batch]
            pool = global_batch * self.pool
            chunks = []
            for start in range(0, len(order), pool):
                chunk = order[start : start + pool]
                chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
                chunks.extend(chunk.split(global_batch))
            shuffle = torch.randperm(len(chunks), generator=generator)
            self._plan = (epoch, [chunks[i] for i in shuffle])
        return self._plan[1]

    def batch(self, epoch: int, index: int) -> ClassificationBatch:
        rows = self._batches_of(epoch)[index][self.rank :: self.world_size]
        ids, mask = pad_sequences([self.sequences[i] for i in rows])
        segments = None if self.segments is None else pad_sequences([self.segments[i] for i in rows], ids.size(1))[0]
        return ClassificationBatch(ids, mask, self.labels[rows], segments)


@dataclass
class FeatureBatch:
    features: torch.Tensor  # (B, D) fixed vectors from a frozen encoder
    labels: torch.Tensor  # (B,)
    reset_state = False  # a class attribute, not a field: no state is carried across these batches

    def to(self, device: torch.device) -> FeatureBatch:
        return FeatureBatch(self.features.to(device), self.labels.to(device))

    @property
    def num_tokens(self) -> int:
        return self.features.shape[0]


class FeatureBatches:
    """Shuffled batches of precomputed feature vectors, addressable by (epoch, index)."""

    stateful = False

    def __init__(self, features: torch.Tensor, labels: Sequence[int], batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if len(features) < batch_size * world_size:
            raise DataError(f"{len(features)} training texts are fewer than one batch of {batch_size * world_size}")
        self.features, self.labels = features, torch.as_tensor(list(labels), dtype=torch.long)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size

    def __len__(self) -> int:
        return len(self.features) // (self.batch_size * self.world_size)

    def batch(self, epoch: int, index: int) -> FeatureBatch:
        order = torch.randperm(len(self.features), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        global_batch = self.batch_size * self.world_size
        rows = order[index * global_batch : (index + 1) * global_batch][self.rank :: self.world_size]
        return FeatureBatch(self.features[rows], self.labels[rows])
