"""A toy model and toy batches for the trainer's own tests: all a task hands the trainer, in a few lines.

`ToyBatches` implements `folio.training.batches.TrainBatches` (its batches `Batch`): a linear regression
y = x·w + b reshuffled every epoch. `ToyRegressor` exposes `loss(batch)`; `ToyRecurrent` exposes the
stateful `loss(batch, state) -> (loss, state)` and records which training batches started afresh.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURES = 4
TRUE_WEIGHTS = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])  # (FEATURES, 1)
TRUE_BIAS = 0.5


class ToyBatch:
    """`batch_size` regression examples: x (B, FEATURES) -> y (B, 1)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, reset_state: bool = False):
        self.x, self.y, self.reset_state = x, y, reset_state

    def to(self, device: torch.device) -> ToyBatch:
        return ToyBatch(self.x.to(device), self.y.to(device), self.reset_state)

    @property
    def num_tokens(self) -> int:
        return self.x.shape[0]


def _examples(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, FEATURES, generator=generator)  # (n, FEATURES)
    return x, x @ TRUE_WEIGHTS + TRUE_BIAS  # (n, 1)


class ToyBatches:
    """`batches` batches an epoch, addressed by (epoch, index) as the trainer's exact resume needs.

    stream > 0 makes the set stateful: the model carries a state from batch to batch, and every
    `stream`-th batch of an epoch starts a new stream (`reset_state`). `valid` is a held-out batch.
    """

    def __init__(self, batches: int = 8, batch_size: int = 16, stream: int = 0, seed: int = 0):
        self.batches, self.batch_size, self.stream, self.seed = batches, batch_size, stream, seed
        self.stateful = stream > 0
        self.x, self.y = _examples(batches * batch_size, torch.Generator().manual_seed(seed))
        self.valid = ToyBatch(*_examples(64, torch.Generator().manual_seed(seed + 1)))

    def __len__(self) -> int:
        return self.batches

    def batch(self, epoch: int, index: int) -> ToyBatch:
        # The order depends on the epoch alone, never on a global RNG, so a resumed run sees the same batches.
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(1000 * self.seed + epoch))
        rows = order[index * self.batch_size:(index + 1) * self.batch_size]
        return ToyBatch(self.x[rows], self.y[rows], reset_state=self.stateful and index % self.stream == 0)

    def evaluate(self, model: nn.Module) -> float:
        """The validation loss, as a task's `evaluate(model)` gives it to the trainer."""
        loss = model.loss(self.valid, None)[0] if self.stateful else model.loss(self.valid)
        return float(loss.detach())


class ToyRegressor(nn.Module):
    """A linear regression with optional input dropout (so that resuming must restore the RNG) and a
    frozen parameter (which the optimizer and the weight average must leave out)."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(FEATURES, 1)
        self.scale = nn.Parameter(torch.ones(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x)) * self.scale  # (B, 1)

    def loss(self, batch: ToyBatch) -> torch.Tensor:
        return F.mse_loss(self(batch.x), batch.y)


class ToyRecurrent(nn.Module):
    """An Elman cell whose state is carried from one batch to the next: `loss(batch, state) -> (loss, state)`.
    (Hand-written: on a busy CPU torch's GRU cell takes a hundred times longer for these tiny sizes.)"""

    def __init__(self, hidden: int = 8, dropout: float = 0.0):
        super().__init__()
        self.input = nn.Linear(FEATURES, hidden)
        self.recurrent = nn.Linear(hidden, hidden, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)
        self.fresh: list[bool] = []  # per training call: did it start without a carried state?

    def loss(self, batch: ToyBatch, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            self.fresh.append(state is None)
        carried = 0.0 if state is None else self.recurrent(state)
        hidden = torch.tanh(self.input(batch.x) + carried)  # (B, hidden)
        return F.mse_loss(self.head(self.dropout(hidden)), batch.y), hidden
