"""A recurrent language model (GRU or LSTM) over token ids."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import ConfigError
from folio.flags import finite_float, integer, positive_int
from folio.models import check_fractions, check_sizes
from folio.models.options import option
from folio.nn.gru import FastGRU

State = Tensor | tuple[Tensor, Tensor]  # GRU: h (L, B, H); LSTM: (h, c)


@dataclass
class RNNLMConfig:
    vocab_size: int
    arch: str = "gru"  # gru | lstm
    layers: int = option(2, type=positive_int, help="layers")
    hidden: int = option(128, type=positive_int, help="recurrent state size")
    embedding_dim: int = option(0, type=integer, help="0: one-hot input (the book's choice)")
    dropout: float = option(0.2, type=finite_float, help="between recurrent layers and before the output layer")
    output_dropout: float | None = option(None, type=finite_float,  # if it should differ from `dropout`
                                          help="before the output layer (default: --dropout)")

    def __post_init__(self):
        if self.arch not in ("gru", "lstm"):
            raise ConfigError(f"--arch {self.arch!r}: choose gru or lstm")
        check_sizes(self, "vocab_size", "layers", "hidden")
        if self.embedding_dim < 0:
            raise ConfigError(f"--embedding-dim must be >= 0 (0 means one-hot), got {self.embedding_dim}")
        check_fractions(self, "dropout", "output_dropout")

    def to_dict(self) -> dict:
        return asdict(self)


class RNNLanguageModel(nn.Module):
    """Embedding (or one-hot) → stacked GRU/LSTM → linear over the vocabulary.

    `forward(ids, state)` returns logits (B, T, V) and the final state, so generation can feed one token
    at a time and carry the state, and stateful training can carry it across batches.
    """

    kind = "causal"  # the language models' contract: see folio.models
    rewind = None  # a recurrent state cannot be cut back to an earlier length
    stateful = True  # ... and it can be carried from one training window to the next
    attention_weights = None  # nor does it attend

    def __init__(self, config: RNNLMConfig):
        super().__init__()
        self.config = config
        one_hot = config.embedding_dim == 0
        self.embedding = None if one_hot else nn.Embedding(config.vocab_size, config.embedding_dim)
        input_size = config.vocab_size if one_hot else config.embedding_dim
        rnn_dropout = config.dropout if config.layers > 1 else 0.0
        if config.arch == "gru":
            self.rnn = FastGRU(input_size, config.hidden, config.layers, dropout=rnn_dropout, batch_first=True)
        else:
            self.rnn = nn.LSTM(input_size, config.hidden, config.layers, dropout=rnn_dropout, batch_first=True)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def _rnn_input(self, ids: Tensor) -> Tensor:
        if self.embedding is not None:
            return self.embedding(ids)  # (B, T, E)
        if isinstance(self.rnn, FastGRU):
            return ids  # FastGRU reads integer input as one-hot indices
        return F.one_hot(ids, self.config.vocab_size).to(self.head.weight.dtype)  # (B, T, V)

    def forward(self, ids: Tensor, state: State | None = None, last_only: bool = False) -> tuple[Tensor, State]:
        """ids (B, T) → logits (B, T, V) and the state after them; `last_only`: the last position's (B, 1, V)."""
        out, state = self.rnn(self._rnn_input(ids), state)  # out: (B, T, H)
        if last_only:
            out = out[:, -1:]
        p = self.config.dropout if self.config.output_dropout is None else self.config.output_dropout
        if p > 0:
            out = F.dropout(out, p, self.training)
        return self.head(out), state

    @staticmethod
    def merge_states(states: list[State]) -> State:
        """One state with the rows of `states` in order (the rows of a recurrent state are independent)."""
        if isinstance(states[0], tuple):  # LSTM: (h, c)
            return tuple(torch.cat(parts, dim=1) for parts in zip(*states, strict=True))
        return torch.cat(states, dim=1)  # (L, ΣB, H)

    @staticmethod
    def select_state(state: State, rows: Tensor) -> State:
        """The state of `rows` (R,) of a batch."""
        if isinstance(state, tuple):
            return tuple(t.index_select(1, rows) for t in state)
        return state.index_select(1, rows)

    @staticmethod
    def reserve(state: State, positions: int) -> State:
        """The state itself: a recurrent state does not grow with the text."""
        return state

    def loss(self, batch, state: State | None = None) -> tuple[Tensor, State]:
        """Mean cross-entropy in nats per token, and the final state (for stateful training)."""
        logits, state = self(batch.inputs, state)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch.targets.reshape(-1))
        return loss, state
