"""The encoder–decoder Transformer (Vaswani et al. 2017), built from `folio.nn.transformer` blocks, with the
recurrent Seq2Seq's interface (`encode`, `decode_step`, `reorder_state`, `expand_state`, `loss`), so the
translate task's training, greedy decoding and beam search serve both.

    >>> model = TransformerSeq2Seq(TransformerSeq2SeqConfig(src_vocab_size=20, tgt_vocab_size=30, layers=1, heads=2, hidden=16))
    >>> state = model.encode(torch.randint(3, 20, (2, 7)), torch.tensor([7, 4]))
    >>> logits, state, weights = model.decode_step(torch.ones(2, dtype=torch.long), state)
    >>> logits.shape, weights.shape
    (torch.Size([2, 30]), torch.Size([2, 7]))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import ConfigError
from folio.flags import finite_float, positive_int
from folio.models import check_fractions, check_heads, check_sizes
from folio.models.options import option
from folio.nn.masks import lengths_to_mask
from folio.nn.positions import PositionalEncoding
from folio.nn.transformer import TransformerBlock


@dataclass
class TransformerSeq2SeqConfig:
    """The "model" section of a `folio translate train --arch transformer` checkpoint."""

    src_vocab_size: int
    tgt_vocab_size: int
    # `folio translate train --arch transformer`'s flags train a small one by default (`cli_default`)
    layers: int = option(3, type=positive_int, help="layers", cli_default=1)  # encoder blocks, as many decoder blocks
    heads: int = option(4, type=positive_int, help="attention heads")
    hidden: int = option(256, type=positive_int, help="the model width", cli_default=128)
    ff_dim: int = option(1024, type=positive_int, help="feed-forward width (default: 4 × --hidden)",
                         cli_default=lambda flags: 4 * flags.hidden)
    dropout: float = option(0.1, type=finite_float, help="dropout")
    label_smoothing: float = option(0.1, type=finite_float, help="label smoothing of the training loss")
    share_embeddings: bool = option(False, action="store_true",  # one table for source, target and output
                                    help="one embedding table and vocabulary for both sides")
    norm_first: bool = True  # pre-LN (trains without a careful warm-up); False: the original post-LN
    pad_id: int = 0
    sos_id: int = 1
    eos_id: int = 2
    max_src_len: int = 256
    max_tgt_len: int = 1024  # positions the decoder has
    arch: str = "transformer_seq2seq"

    def __post_init__(self):
        check_sizes(self, "src_vocab_size", "tgt_vocab_size", "layers", "heads", "hidden", "ff_dim", "max_src_len", "max_tgt_len")
        check_heads(self.hidden, self.heads)
        check_fractions(self, "dropout", "label_smoothing")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError("share_embeddings needs one vocabulary for both sides: use a joint tokenizer")

    def describe(self) -> str:
        return f"Transformer {self.layers}+{self.layers} blocks, width {self.hidden}, {self.heads} heads"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TransformerSeq2SeqConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class TransformerDecoderState:
    """Rows = sentences (or beam hypotheses): the encoder memory and each decoder layer's caches."""

    memory: Tensor  # (N, S, C)
    mask: Tensor  # (N, S) True = real source token
    caches: list | None  # per decoder layer: {"self": (k, v), "cross": (k, v)}; None before the first step
    step: int = 0  # target positions decoded so far


class TransformerSeq2Seq(nn.Module):
    """The encoder–decoder Transformer (Vaswani et al. 2017) with the recurrent Seq2Seq's interface
    (`encode`, `decode_step`, `reorder_state`, `expand_state`, `loss`), so the translate task's training,
    greedy decoding and beam search serve it unchanged. Embeddings are scaled by √width and share their
    table with the output layer; sinusoidal positions.
    """

    def __init__(self, config: TransformerSeq2SeqConfig):
        super().__init__()
        self.config = c = config
        self.src_embedding = nn.Embedding(c.src_vocab_size, c.hidden, padding_idx=c.pad_id)
        self.tgt_embedding = self.src_embedding if c.share_embeddings else nn.Embedding(c.tgt_vocab_size, c.hidden, padding_idx=c.pad_id)
        for table in {id(self.src_embedding): self.src_embedding, id(self.tgt_embedding): self.tgt_embedding}.values():
            nn.init.normal_(table.weight, std=c.hidden**-0.5)
            table.weight.data[c.pad_id].zero_()
        self.positions = PositionalEncoding(c.hidden, max(c.max_src_len, c.max_tgt_len))
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = nn.ModuleList(TransformerBlock(c.hidden, c.heads, c.ff_dim, c.dropout, c.norm_first, activation="relu")
                                     for _ in range(c.layers))
        self.decoder = nn.ModuleList(TransformerBlock(c.hidden, c.heads, c.ff_dim, c.dropout, c.norm_first,
                                                      cross_attention=True, activation="relu") for _ in range(c.layers))
        self.encoder_norm = nn.LayerNorm(c.hidden) if c.norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(c.hidden) if c.norm_first else nn.Identity()
        self.output = nn.Linear(c.hidden, c.tgt_vocab_size, bias=False)
        self.output.weight = self.tgt_embedding.weight

    def _embed(self, table: nn.Embedding, ids: Tensor, offset: int = 0) -> Tensor:
        return self.dropout(self.positions(table(ids) * math.sqrt(self.config.hidden), offset))  # (B, T, C)

    def encode(self, src: Tensor, src_lengths: Tensor) -> TransformerDecoderState:
        mask = lengths_to_mask(src_lengths.to(src.device), src.size(1))  # (B, S)
        x = self._embed(self.src_embedding, src)
        for block in self.encoder:
            x, _ = block(x, mask=mask[:, None, None, :])
        return TransformerDecoderState(self.encoder_norm(x), mask, None)

    def _decode(self, tgt: Tensor, state: TransformerDecoderState, need_weights: bool) -> tuple[Tensor, list, Tensor | None]:
        """Target ids (N, T) after `state.step` earlier positions → hidden (N, T, C), new caches, the last
        layer's cross-attention averaged over heads (N, T, S) when asked."""
        x = self._embed(self.tgt_embedding, tgt, state.step)
        memory_mask = state.mask[:, None, None, :]
        caches, weights = [], None
        for i, block in enumerate(self.decoder):
            last = i == len(self.decoder) - 1
            x, extras = block(x, causal=True, memory=state.memory, memory_mask=memory_mask,
                              cache=None if state.caches is None else state.caches[i], need_weights=need_weights and last)
            caches.append({"self": extras["self"], "cross": extras["cross"]})
            if need_weights and last:
                weights = extras["cross_weights"].mean(1)  # (N, T, S)
        return self.decoder_norm(x), caches, weights

    def decode_step(self, tokens: Tensor, state: TransformerDecoderState) -> tuple[Tensor, TransformerDecoderState, Tensor]:
        """Previous tokens (N,) → logits (N, V), the new state, attention weights (N, S)."""
        out, caches, weights = self._decode(tokens[:, None], state, need_weights=True)
        return self.output(out[:, 0]), replace(state, caches=caches, step=state.step + 1), weights[:, 0]

    def reorder_state(self, state: TransformerDecoderState, index: Tensor) -> TransformerDecoderState:
        """Rows `index` of the self-attention caches. The memory, its mask and the cross-attention caches
        stay: beam search only moves hypotheses within one sentence, whose rows share the same source."""
        if state.caches is None:
            return state
        caches = [{**c, "self": tuple(t.index_select(0, index) for t in c["self"])} for c in state.caches]
        return replace(state, caches=caches)

    def expand_state(self, state: TransformerDecoderState, beams: int) -> TransformerDecoderState:
        index = torch.arange(state.memory.size(0), device=state.memory.device).repeat_interleave(beams)
        caches = None if state.caches is None else [
            {k: tuple(t.index_select(0, index) for t in v) for k, v in c.items()} for c in state.caches
        ]
        return TransformerDecoderState(state.memory.index_select(0, index), state.mask.index_select(0, index), caches, state.step)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced logits (B, T, V) and the last layer's cross-attention (B, T, S)."""
        out, _, weights = self._decode(tgt_in, self.encode(src, src_lengths), need_weights=True)
        return self.output(out), weights

    def loss(self, batch, reduction: str = "mean", label_smoothing: float | None = None) -> Tensor:
        """Cross-entropy per real target token (EOS included), all positions decoded in parallel."""
        out, _, _ = self._decode(batch.tgt_in, self.encode(batch.src, batch.src_lengths), need_weights=False)
        keep = batch.tgt_out != self.config.pad_id  # (B, T)
        logits = self.output(out[keep])  # (real tokens, V)
        smoothing = self.config.label_smoothing if label_smoothing is None else label_smoothing
        return F.cross_entropy(logits.float(), batch.tgt_out[keep], reduction=reduction, label_smoothing=smoothing)


__all__ = ["TransformerDecoderState", "TransformerSeq2Seq", "TransformerSeq2SeqConfig"]
