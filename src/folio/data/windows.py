"""Batches of character windows, built by index so any batch of any epoch is reachable directly.

Random access is what makes resume exact: batch `i` of epoch `e` is a pure function of
(seed, epoch, i), so a resumed run picks up at the same batch without replaying the data.

Two layouts:

* `RandomWindows`: every window of length n+1 with shift 1, shuffled each epoch; inputs are the first
  n ids and targets the last n (offset by one).
* `StatefulStreams`: the text is cut into `batch_size` contiguous streams; batch i takes the i-th
  consecutive, non-overlapping window of every stream, so row j of batch i+1 continues row j of batch i
  and a recurrent model may carry its hidden state across batches.

Under torchrun each rank takes its own rows of the same global batch. Both layouts are the trainer's
`folio.training.batches.TrainBatches`, and their batches its `Batch`.

The ids may be a memory-mapped array of any integer type (`folio.data.token_cache`: uint8/16/32 on
disk): a batch reads only its own windows and widens them to int64; the corpus is never copied whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from folio.errors import DataError


@dataclass
class Batch:
    """Windows of ids and their next ids (a `folio.training.batches.Batch`)."""

    inputs: torch.Tensor  # (B, n)
    targets: torch.Tensor  # (B, n)
    reset_state: bool = False  # True where a stateful model must start from a zero state

    def to(self, device: torch.device) -> Batch:
        return Batch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True), self.reset_state)

    @property
    def num_tokens(self) -> int:
        return self.targets.numel()


class IndexPermutation:
    """A pseudo-random permutation of range(n), computed index by index in O(1) memory: a 4-round
    Feistel network over the next even power of two, walked until it lands below n (fewer than four
    steps on average). Same `key`, same permutation, on every machine.

    >>> order = IndexPermutation(10, key=3)
    >>> sorted(order(torch.arange(10)).tolist()) == list(range(10))
    True
    """

    rounds = 4

    def __init__(self, n: int, key: int):
        self.n = n
        self.half = max(1, (max(n, 2) - 1).bit_length() + 1) // 2  # 2·half bits cover range(n)
        self.mask = (1 << self.half) - 1
        generator = torch.Generator().manual_seed(key)
        self.keys = torch.randint(0, 1 << 31, (self.rounds,), generator=generator).tolist()

    def _mix(self, right: torch.Tensor, key: int) -> torch.Tensor:
        # A multiply-xorshift hash; operands stay below 2**32 × 2**27, so int64 never overflows.
        h = ((right ^ key) * 0x45D9F3B) & 0xFFFFFFFF
        h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
        return (h ^ (h >> 16)) & self.mask

    def _feistel(self, x: torch.Tensor) -> torch.Tensor:
        left, right = x >> self.half, x & self.mask
        for key in self.keys:
            left, right = right, left ^ self._mix(right, key)
        return (left << self.half) | right

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        """The permuted index of each position (int64, same shape)."""
        out = self._feistel(positions.long())
        outside = out >= self.n
        while outside.any():  # cycle walking: a bijection of range(2**bits) restricted to range(n)
            out[outside] = self._feistel(out[outside])
            outside = out >= self.n
        return out


class RandomWindows:
    """All windows of `seq_len + 1` ids at shift 1, in a fresh random order each epoch.

    Up to `exact_shuffle_limit` windows the order is `torch.randperm`'s (as it always was, so runs on
    such corpora reproduce earlier ones exactly); beyond it, holding a permutation would cost 8 bytes per
    window, so the order is an `IndexPermutation`, computed per batch.
    """

    stateful: bool = False  # windows overlap and come shuffled: no state carries over
    exact_shuffle_limit: int = 1 << 24

    def __init__(self, ids: torch.Tensor, seq_len: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if len(ids) < seq_len + 1:
            raise DataError(f"the text has {len(ids)} characters, fewer than one window of {seq_len + 1}")
        self.ids, self.seq_len, self.batch_size = ids, seq_len, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_windows = len(ids) - seq_len
        global_batch = batch_size * world_size
        if self.num_windows < global_batch:
            raise DataError(f"{self.num_windows} windows are fewer than one batch of {global_batch}")
        self._offsets = torch.arange(seq_len + 1)
        self._order: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        """Batches per epoch (the last partial batch is dropped)."""
        return self.num_windows // (self.batch_size * self.world_size)

    def _starts(self, epoch: int, first: int) -> torch.Tensor:
        """The first ids of windows `first .. first + batch_size - 1` in epoch `epoch`'s order."""
        key = self.seed * 1_000_003 + epoch
        if self.num_windows > self.exact_shuffle_limit:
            return IndexPermutation(self.num_windows, key)(torch.arange(first, first + self.batch_size))
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, torch.randperm(self.num_windows, generator=torch.Generator().manual_seed(key)))
        return self._order[1][first : first + self.batch_size]

    def batch(self, epoch: int, index: int) -> Batch:
        global_batch = self.batch_size * self.world_size
        first = index * global_batch + self.rank * self.batch_size
        starts = self._starts(epoch, first)
        windows = self.ids[starts[:, None] + self._offsets].long()  # (B, n+1), one gather
        return Batch(windows[:, :-1], windows[:, 1:])


class StatefulStreams:
    """`batch_size` contiguous streams; consecutive batches continue each row."""

    stateful: bool = True  # a recurrent model carries its state from batch i to batch i+1

    def __init__(self, ids: torch.Tensor, seq_len: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        streams = batch_size * world_size
        stream_len = (len(ids) - 1) // streams
        if stream_len < seq_len:
            raise DataError(
                f"the text has {len(ids)} characters: too short for {streams} streams of at least {seq_len + 1}"
            )
        self.seq_len, self.batch_size = seq_len, batch_size
        usable = stream_len * streams
        rows = slice(rank * batch_size, (rank + 1) * batch_size)
        self.inputs = ids[:usable].view(streams, stream_len)[rows]  # (B, L)
        self.targets = ids[1 : usable + 1].view(streams, stream_len)[rows]  # (B, L), shifted by one
        self.num_batches = stream_len // seq_len

    def __len__(self) -> int:
        return self.num_batches

    def batch(self, epoch: int, index: int) -> Batch:
        window = slice(index * self.seq_len, (index + 1) * self.seq_len)
        return Batch(self.inputs[:, window].long(), self.targets[:, window].long(), reset_state=index == 0)


def make_batches(ids: torch.Tensor, seq_len: int, batch_size: int, stateful: bool, **kwargs) -> RandomWindows | StatefulStreams:
    """Stateful streams or random windows of `ids` (T,); `kwargs`: seed, rank, world_size."""
    return (StatefulStreams if stateful else RandomWindows)(ids, seq_len, batch_size, **kwargs)
