"""A recurrent sequence classifier: embedding → stacked (bi)GRU/LSTM → pooling → dense head.

Masks are `True` for real tokens ("keep"). With `masking=True` padding never changes a result:

* the forward direction reads left to right, so right padding comes after every real output;
* the backward direction reads each sequence reversed *within its own length* (a per-row gather), so
  it starts at the last real token, not at the padding;
* pooling ("last", "mean", "max", "max_mean") looks at real positions only.

`masking=False` is the ablation: padding is read like any token and pooled (the book without masks).

    >>> model = RecurrentClassifier(ClassifierConfig(vocab_size=100, num_classes=2))
    >>> ids = torch.tensor([[5, 6, 7, 0, 0]]); mask = ids != 0
    >>> model(ids, mask).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import ConfigError
from folio.nn.gru import FastGRU

POOLINGS = ("last", "mean", "max", "max_mean")


@dataclass
class ClassifierConfig:
    vocab_size: int
    num_classes: int = 2
    arch: str = "gru"  # gru | lstm
    layers: int = 1
    hidden: int = 64  # per direction
    embedding_dim: int = 128
    bidirectional: bool = True
    pooling: str = "max_mean"
    dropout: float = 0.3  # on embeddings' outputs, between layers and before the head
    masking: bool = True
    freeze_embedding: bool = False

    def __post_init__(self):
        if self.arch not in ("gru", "lstm"):
            raise ConfigError(f"--arch {self.arch!r}: choose gru or lstm")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"--pooling {self.pooling!r}: choose one of {', '.join(POOLINGS)}")
        for name in ("vocab_size", "layers", "hidden", "embedding_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {self.num_classes}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")

    def describe(self) -> str:
        return f"{'bi' if self.bidirectional else ''}{self.arch.upper()} {self.layers}x{self.hidden}"

    def to_dict(self) -> dict:
        return asdict(self)


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first `lengths[b]` steps, leaving its padding where it is. x: (B, T, C).

    The permutation is its own inverse, so applying it again restores the order.
    """
    steps = x.size(1)
    positions = torch.arange(steps, device=x.device).unsqueeze(0)  # (1, T)
    lengths = lengths.unsqueeze(1)  # (B, 1)
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)  # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class RecurrentClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
        self.embedding.weight.requires_grad_(not config.freeze_embedding)
        rnn_class = FastGRU if config.arch == "gru" else nn.LSTM
        directions = 2 if config.bidirectional else 1
        # One single-direction module per (layer, direction): the backward one reads reversed-within-
        # length input, which no packed sequence is needed for and which keeps FastGRU's fast path.
        self.rnns = nn.ModuleList()
        for layer in range(config.layers):
            size = config.embedding_dim if layer == 0 else config.hidden * directions
            self.rnns.append(nn.ModuleList(rnn_class(size, config.hidden, batch_first=True) for _ in range(directions)))
        self.dropout = nn.Dropout(config.dropout)
        features = config.hidden * directions * (2 if config.pooling == "max_mean" else 1)
        self.head = nn.Linear(features, config.num_classes)

    def load_embeddings(self, matrix: Tensor) -> None:
        if matrix.shape != self.embedding.weight.shape:
            raise ConfigError(f"embedding matrix {tuple(matrix.shape)} does not fit {tuple(self.embedding.weight.shape)}")
        with torch.no_grad():
            self.embedding.weight.copy_(matrix)

    def encode(self, embedded: Tensor, mask: Tensor) -> Tensor:
        """Embedded tokens (B, T, E) and mask (B, T) → pooled features (B, F)."""
        cfg = self.config
        batch, steps = mask.shape
        if not cfg.masking:
            mask = torch.ones_like(mask)
        lengths = mask.sum(1).clamp(min=1)  # (B,) masks are "prefix" masks: real tokens, then padding
        x = self.dropout(embedded)
        for layer, directions in enumerate(self.rnns):
            outputs = [directions[0](x)[0]]  # (B, T, H)
            if cfg.bidirectional:
                backward_in = reverse_within_length(x, lengths) if cfg.masking else x.flip(1)
                backward = directions[1](backward_in)[0]
                outputs.append(reverse_within_length(backward, lengths) if cfg.masking else backward.flip(1))
            x = torch.cat(outputs, dim=-1)  # (B, T, D*H)
            if layer < cfg.layers - 1:
                x = self.dropout(x)
        keep = mask.unsqueeze(-1)  # (B, T, 1)
        if cfg.pooling == "last":
            # forward direction: its state after the last real token; backward: after reading all of it
            hidden = cfg.hidden
            last = x.gather(1, (lengths - 1).view(batch, 1, 1).expand(batch, 1, x.size(-1))).squeeze(1)
            pooled = last if not cfg.bidirectional else torch.cat([last[:, :hidden], x[:, 0, hidden:]], dim=-1)
        else:
            mean = (x * keep).sum(1) / lengths.unsqueeze(1).to(x.dtype)
            maximum = x.masked_fill(~keep, float("-inf")).amax(1)
            pooled = {"mean": mean, "max": maximum}.get(cfg.pooling)
            if pooled is None:
                pooled = torch.cat([maximum, mean], dim=-1)
        return pooled  # (B, F)

    def forward_embedded(self, embedded: Tensor, mask: Tensor) -> Tensor:
        """Logits (B, C) from embedded tokens: the entry point for gradient-based explanations."""
        return self.head(self.dropout(self.encode(embedded, mask)))

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """ids (B, T), mask (B, T) bool (default: ids != 0) → logits (B, C)."""
        if mask is None:
            mask = ids != 0
        return self.forward_embedded(self.embedding(ids), mask)

    def loss(self, batch) -> Tensor:
        return F.cross_entropy(self(batch.ids, batch.mask), batch.labels)
