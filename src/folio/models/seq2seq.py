"""A recurrent encoder–decoder (Sutskever et al. 2014) with optional attention (Bahdanau et al. 2015;
Luong et al. 2015), read top to bottom:

    source ids ─► embedding ─► GRU/LSTM encoder (optionally bidirectional) ─► memory (B, S, Dm)
                                      │ final states, both directions merged by a "bridge" layer
                                      ▼
    y_{t-1} ─► embedding ─► GRU/LSTM decoder ─► attention over memory ─► tanh(W[h_t; c_t]) ─► logits

* attention `none`: the decoder sees the source only through the encoder's final state.
* `bahdanau`: the previous decoder state queries the memory; the context is part of the RNN input.
* `luong_dot` / `luong_general`: the current decoder output queries the memory after the RNN step.
* input feeding (Luong): the previous attentional vector h̃_{t-1} is part of the next RNN input, so
  the decoder knows what it attended to before.

Training is teacher-forced (optionally with scheduled sampling: with a probability that the task
raises over training, a sequence is fed its own previous prediction instead of the reference).
When nothing makes step t depend on step t-1's output (Luong attention or none, without input feeding
or scheduled sampling), the decoder runs over the whole target at once; otherwise it loops over steps.
Both paths give the same result (tested).

Inference uses `encode` → `decode_step` one token at a time; `reorder_state` lets beam search keep the
states of the surviving hypotheses. Masks follow nn/masks.py: True = real token.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from folio.data.pairs import Seq2SeqBatch
from folio.errors import ConfigError
from folio.flags import finite_float, positive_int
from folio.models import check_fractions, check_sizes
from folio.models.options import option
from folio.nn.attention import ATTENTION_TYPES, make_attention
from folio.nn.gru import FastGRU
from folio.nn.masks import lengths_to_mask

RNNState = Tensor | tuple[Tensor, Tensor]  # GRU: h (L, N, H); LSTM: (h, c)


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int
    tgt_vocab_size: int
    cell: str = option("gru", choices=("gru", "lstm"), help="the recurrent cell")
    layers: int = option(1, type=positive_int, help="layers")
    embedding_dim: int = option(64, type=positive_int, help="embedding width")
    hidden: int = option(128, type=positive_int, help="recurrent state size")
    bidirectional: bool = option(True, action=argparse.BooleanOptionalAction, help="a bidirectional encoder")
    attention: str = option("bahdanau", choices=ATTENTION_TYPES, help="the attention over the source")
    input_feeding: bool = option(True, action=argparse.BooleanOptionalAction,  # only meaningful with attention
                                 help="feed the previous attentional vector to the decoder (Luong)")
    share_embeddings: bool = option(False, action="store_true",
                                    help="one embedding table and vocabulary for both sides")
    tie_output: bool = option(False, action="store_true",  # needs embedding_dim == hidden
                              help="output layer shares the target embedding")
    dropout: float = option(0.1, type=finite_float, help="dropout")
    label_smoothing: float = option(0.0, type=finite_float, help="label smoothing of the training loss")
    scheduled_sampling: float = option(0.0, type=finite_float,
                                       help="final probability of feeding the model's own prediction (rises "
                                            "linearly from 0)")
    pad_id: int = 0
    sos_id: int = 1
    eos_id: int = 2
    max_src_len: int = 256  # longest source (in tokens, EOS included) the model accepts
    arch: str = "rnn_seq2seq"

    def __post_init__(self):
        if self.cell not in ("gru", "lstm"):
            raise ConfigError(f"cell {self.cell!r}: choose gru or lstm")
        if self.attention not in ATTENTION_TYPES:
            raise ConfigError(f"attention {self.attention!r}: choose one of {', '.join(ATTENTION_TYPES)}")
        check_sizes(self, "src_vocab_size", "tgt_vocab_size", "layers", "embedding_dim", "hidden", "max_src_len")
        check_fractions(self, "dropout", "label_smoothing")
        if not 0 <= self.scheduled_sampling <= 1:
            raise ConfigError(f"--scheduled-sampling must be in [0, 1], got {self.scheduled_sampling}")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError(
                "share_embeddings needs one vocabulary for both sides "
                f"(source has {self.src_vocab_size} entries, target {self.tgt_vocab_size}): use a joint tokenizer"
            )
        if self.tie_output and self.embedding_dim != self.hidden:
            raise ConfigError(f"tie_output needs embedding_dim ({self.embedding_dim}) == hidden ({self.hidden})")

    def describe(self) -> str:
        return (f"{self.cell.upper()} {self.layers}x{self.hidden}{' bidirectional' if self.bidirectional else ''}, "
                f"attention {self.attention}")

    @property
    def memory_dim(self) -> int:
        return self.hidden * (2 if self.bidirectional else 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Seq2SeqConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class DecoderState:
    """Everything one decoding step needs, rows = sequences (or hypotheses in beam search)."""

    rnn: RNNState  # (L, N, H) each
    feed: Tensor | None  # (N, H): the previous attentional vector (input feeding), else None
    memory: Tensor  # (N, S, Dm) encoder outputs
    keys: Tensor | None  # (N, S, K) memory-only part of the attention score
    mask: Tensor  # (N, S) True = real source token


def _index_rnn(state: RNNState, index: Tensor) -> RNNState:
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = config
        c = config
        rnn_class = nn.GRU if c.cell == "gru" else nn.LSTM
        self.src_embedding = nn.Embedding(c.src_vocab_size, c.embedding_dim, padding_idx=c.pad_id)
        self.tgt_embedding = self.src_embedding if c.share_embeddings else nn.Embedding(
            c.tgt_vocab_size, c.embedding_dim, padding_idx=c.pad_id
        )
        between = c.dropout if c.layers > 1 else 0.0
        self.encoder = rnn_class(c.embedding_dim, c.hidden, c.layers, batch_first=True, dropout=between,
                                 bidirectional=c.bidirectional)
        if c.bidirectional:  # merges each layer's forward and backward final states into the decoder's
            self.bridge = nn.Linear(2 * c.hidden, c.hidden)
            self.bridge_cell = nn.Linear(2 * c.hidden, c.hidden) if c.cell == "lstm" else None
        self.attention = make_attention(c.attention, c.hidden, c.memory_dim)
        self.uses_feed = self.attention is not None and c.input_feeding
        decoder_input = c.embedding_dim + (c.hidden if self.uses_feed else 0)
        decoder_input += c.memory_dim if c.attention == "bahdanau" else 0
        decoder_class = FastGRU if c.cell == "gru" else nn.LSTM
        self.decoder = decoder_class(decoder_input, c.hidden, c.layers, batch_first=True, dropout=between)
        self.combine = nn.Linear(c.hidden + c.memory_dim, c.hidden) if self.attention is not None else None
        self.output = nn.Linear(c.hidden, c.tgt_vocab_size)
        if c.tie_output:
            self.output.weight = self.tgt_embedding.weight
        self.dropout = nn.Dropout(c.dropout)
        self.sampling_probability = 0.0  # scheduled sampling; set by the task as training advances

    # ---- encoder ----------------------------------------------------------------------------------
    def _merge_directions(self, state: Tensor, bridge: nn.Linear) -> Tensor:
        """(L*2, N, H) with directions interleaved per layer → (L, N, H) through the bridge."""
        layers, hidden = self.config.layers, self.config.hidden
        state = state.view(layers, 2, state.size(1), hidden)  # (L, 2, N, H): [forward, backward]
        both = torch.cat([state[:, 0], state[:, 1]], dim=-1)  # (L, N, 2H)
        return torch.tanh(bridge(both))

    def encode(self, src: Tensor, src_lengths: Tensor) -> DecoderState:
        """Source ids (B, S) and lengths (B,) → the decoder's initial state (memory, mask, RNN state)."""
        lengths = src_lengths.cpu()
        embedded = self.dropout(self.src_embedding(src))  # (B, S, E)
        # Packing makes every sequence end at its own last token: the backward direction starts there
        # and the final states are those of the real last token, not of padding.
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        packed_out, final = self.encoder(packed)
        memory, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=src.size(1))  # (B, S, Dm)
        if self.config.bidirectional:
            if isinstance(final, tuple):
                final = (self._merge_directions(final[0], self.bridge), self._merge_directions(final[1], self.bridge_cell))
            else:
                final = self._merge_directions(final, self.bridge)
        mask = lengths_to_mask(src_lengths.to(src.device), src.size(1))  # (B, S)
        keys = self.attention.prepare(memory) if self.attention is not None else None
        feed = memory.new_zeros(src.size(0), self.config.hidden) if self.uses_feed else None
        return DecoderState(final, feed, memory, keys, mask)

    # ---- decoder ----------------------------------------------------------------------------------
    def _top(self, rnn: RNNState) -> Tensor:
        return (rnn[0] if isinstance(rnn, tuple) else rnn)[-1]  # (N, H): the top layer's state

    def decode_step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState, Tensor | None]:
        """Previous tokens (N,) → logits (N, V), the new state, attention weights (N, S) or None."""
        out, state, weights = self._step(tokens, state)
        return self.output(self.dropout(out)), state, weights

    def _step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoder step before the output layer: h̃_t (N, H), the new state, attention weights."""
        inputs = [self.dropout(self.tgt_embedding(tokens))]  # (N, E)
        weights = None
        if self.config.attention == "bahdanau":
            context, weights = self.attention(self._top(state.rnn), state.memory, state.mask, state.keys)
            inputs.append(context)
        if self.uses_feed:
            inputs.append(state.feed)
        out, rnn = self.decoder(torch.cat(inputs, -1)[:, None, :], state.rnn)  # out: (N, 1, H)
        out = out[:, 0]
        if self.attention is not None:
            if self.config.attention != "bahdanau":
                context, weights = self.attention(out, state.memory, state.mask, state.keys)
            out = torch.tanh(self.combine(torch.cat([out, context], -1)))  # h̃_t (N, H)
        return out, replace(state, rnn=rnn, feed=out if self.uses_feed else None), weights

    def reorder_state(self, state: DecoderState, index: Tensor) -> DecoderState:
        """Rows `index` of the recurrent state. Memory, keys and mask are left as they are: beam search
        only moves hypotheses within one sentence, whose rows share the same source."""
        feed = state.feed.index_select(0, index) if state.feed is not None else None
        return replace(state, rnn=_index_rnn(state.rnn, index), feed=feed)

    def expand_state(self, state: DecoderState, beams: int) -> DecoderState:
        """Each sentence's row repeated `beams` times, consecutively: (B, ...) → (B*beams, ...)."""
        index = torch.arange(state.memory.size(0), device=state.memory.device).repeat_interleave(beams)
        rows = lambda t: None if t is None else t.index_select(0, index)  # noqa: E731
        return DecoderState(_index_rnn(state.rnn, index), rows(state.feed), rows(state.memory), rows(state.keys), rows(state.mask))

    @property
    def parallel_decoder(self) -> bool:
        return self.config.attention != "bahdanau" and not self.uses_feed and self.sampling_probability == 0

    def decoder_outputs(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, step_by_step: bool = False) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced h̃ (B, T, H) before the output layer, and attention weights (B, T, S) or None."""
        state = self.encode(src, src_lengths)
        if self.parallel_decoder and not step_by_step:
            out, _ = self.decoder(self.dropout(self.tgt_embedding(tgt_in)), state.rnn)  # (B, T, H)
            weights = None
            if self.attention is not None:
                context, weights = self.attention.forward_all(out, state.memory, state.mask, state.keys)  # (B, T, Dm)
                out = torch.tanh(self.combine(torch.cat([out, context], -1)))
            return out, weights
        outs, weights = [], []
        sampling = self.training and self.sampling_probability > 0
        tokens = tgt_in[:, 0]
        for t in range(tgt_in.size(1)):
            if t > 0:
                tokens = tgt_in[:, t]
                if sampling:
                    with torch.no_grad():
                        own = self.output(outs[-1]).argmax(-1)
                    use_own = torch.rand(tokens.shape, device=tokens.device) < self.sampling_probability
                    tokens = torch.where(use_own & (tokens != self.config.pad_id), own, tokens)
            out, state, step_weights = self._step(tokens, state)
            outs.append(out)
            weights.append(step_weights)
        attn = torch.stack(weights, 1) if weights[0] is not None else None
        return torch.stack(outs, 1), attn  # (B, T, H), (B, T, S)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, step_by_step: bool = False) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced logits (B, T, V) and attention weights (B, T, S) (None without attention)."""
        out, weights = self.decoder_outputs(src, src_lengths, tgt_in, step_by_step)
        return self.output(self.dropout(out)), weights

    def loss(self, batch: Seq2SeqBatch, reduction: str = "mean", label_smoothing: float | None = None) -> Tensor:
        """Cross-entropy per target token (EOS included, padding excluded): the mean, or the sum.

        The output layer (the costliest product with a large vocabulary) runs on real target tokens only.
        """
        out, _ = self.decoder_outputs(batch.src, batch.src_lengths, batch.tgt_in)
        keep = batch.tgt_out != self.config.pad_id  # (B, T)
        logits = self.output(self.dropout(out[keep]))  # (real tokens, V)
        smoothing = self.config.label_smoothing if label_smoothing is None else label_smoothing
        return F.cross_entropy(logits.float(), batch.tgt_out[keep], reduction=reduction, label_smoothing=smoothing)
