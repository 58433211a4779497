"""Sequence classifiers: token ids (B, T) and a mask → logits (B, C).

`RecurrentClassifier`: embedding → stacked (bi)GRU/LSTM → pooling → dense head.
`TransformerClassifier`: a BERT encoder (bert.py, from scratch or MiniLM) or a causal GPT trunk (gpt.py,
pretrained by `folio lm`) → pooling over real tokens → dense head.

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
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import CheckpointError, ConfigError
from folio.flags import finite_float, positive_int
from folio.models import check_fractions, check_sizes, mean_pool
from folio.models.bert import BertConfig, BertEncoder, BertPooler
from folio.models.bilm import BiLM, BiLMConfig, ScalarMix
from folio.models.gpt import GPT, GPTConfig
from folio.models.options import option
from folio.nn.gru import FastGRU
from folio.nn.masks import reverse_within_length

POOLINGS = ("last", "mean", "max", "max_mean")
CLI_DROPOUT = 0.3  # `folio classify train`'s dropout, of every classifier it trains (also with --init-from)


def check_classes(num_classes: int) -> None:
    """Both classifier configs: a softmax over one class learns nothing."""
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")


@dataclass
class ClassifierConfig:
    vocab_size: int
    num_classes: int = 2
    cell: str = "gru"  # gru | lstm (`folio classify train --arch`)
    layers: int = option(1, type=positive_int, help="layers")
    hidden: int = option(64, type=positive_int, help="units per direction")
    embedding_dim: int = option(128, type=positive_int, help="embedding width (50 with --embeddings glove)")
    bidirectional: bool = option(True, flag="--unidirectional", action="store_false", help="read left to right only")
    pooling: str = option("max_mean", choices=POOLINGS, help="how the states become one vector")
    dropout: float = option(0.3, type=finite_float, help="on embeddings' outputs, between layers and before the head",
                            cli_default=CLI_DROPOUT)
    masking: bool = option(True, flag="--no-mask", action="store_false",
                           help="ablation: read and pool padding like tokens")
    freeze_embedding: bool = option(False, flag="--freeze-embeddings", action="store_true",
                                    help="the embedding does not learn")
    extra_features: int = 0  # per-token features read beside the embedding (an ELMo mix: ELMoClassifier)
    arch: str = "rnn_classifier"

    def __post_init__(self):
        if self.arch in ("gru", "lstm"):  # the cell, under the key that named it before "rnn_classifier" (and `folio classify --arch`)
            self.cell, self.arch = self.arch, "rnn_classifier"
        if self.cell not in ("gru", "lstm"):
            raise ConfigError(f"--arch {self.cell!r}: choose gru or lstm")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"--pooling {self.pooling!r}: choose one of {', '.join(POOLINGS)}")
        check_sizes(self, "vocab_size", "layers", "hidden", "embedding_dim")
        check_classes(self.num_classes)
        check_fractions(self, "dropout")

    def describe(self) -> str:
        return f"{'bi' if self.bidirectional else ''}{self.cell.upper()} {self.layers}x{self.hidden}"

    def to_dict(self) -> dict:
        return asdict(self)


class RecurrentClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
        self.embedding.weight.requires_grad_(not config.freeze_embedding)
        rnn_class = FastGRU if config.cell == "gru" else nn.LSTM
        directions = 2 if config.bidirectional else 1
        # One single-direction module per (layer, direction): the backward one reads reversed-within-
        # length input, which no packed sequence is needed for and which keeps FastGRU's fast path.
        self.rnns = nn.ModuleList()
        for layer in range(config.layers):
            size = config.embedding_dim + config.extra_features if layer == 0 else config.hidden * directions
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
        """Embedded tokens (B, T, E + extra_features) and mask (B, T) → pooled features (B, F)."""
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
        if cfg.pooling == "last":
            # forward direction: its state after the last real token; backward: after reading all of it
            hidden = cfg.hidden
            last = x.gather(1, (lengths - 1).view(batch, 1, 1).expand(batch, 1, x.size(-1))).squeeze(1)
            pooled = last if not cfg.bidirectional else torch.cat([last[:, :hidden], x[:, 0, hidden:]], dim=-1)
        else:
            mean = mean_pool(x, mask)
            maximum = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)  # padding never wins
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


# ---- a recurrent classifier over a frozen biLM (ELMo) --------------------------------------------------
@dataclass
class ELMoClassifierConfig:
    """A recurrent classifier (its ClassifierConfig fields in `classifier`) reading, beside its own word
    embedding, the ELMo mix of a frozen biLM (its BiLMConfig fields in `bilm`)."""

    bilm: dict
    classifier: dict
    features: str | None = None  # the biLM's directory, for the record
    arch: str = "elmo_classifier"

    def __post_init__(self):
        BiLMConfig(**self.bilm), ClassifierConfig(**self.classifier)  # fail early on a bad field

    @property
    def num_classes(self) -> int:
        return self.classifier["num_classes"]

    def describe(self) -> str:
        b = BiLMConfig(**self.bilm)
        return (f"{ClassifierConfig(**self.classifier).describe()} over the ELMo mix of a frozen biLM "
                f"({b.layers}x{b.hidden}{', char CNN' if b.char_cnn else ''}) from {self.features}")

    def to_dict(self) -> dict:
        return asdict(self)


class ELMoClassifier(nn.Module):
    """ids (B, T), mask → logits (B, C): [embedding; γ Σ softmax(w)_k ELMo_k] → the recurrent classifier.

    The biLM is frozen and always in eval mode (no dropout inside it); the task learns the mix (w, γ)
    and the classifier. Padding never changes a score: the biLM's backward stack reads each row within
    its length, and the classifier masks as `RecurrentClassifier` does.
    """

    def __init__(self, config: ELMoClassifierConfig):
        super().__init__()
        self.config = config
        self.bilm = BiLM(BiLMConfig(**config.bilm)).requires_grad_(False)
        self.mix = ScalarMix(self.bilm.config.layers + 1)
        self.classifier = RecurrentClassifier(ClassifierConfig(**config.classifier))
        if self.classifier.config.extra_features != self.bilm.config.dim:
            raise ConfigError(f"the classifier reads {self.classifier.config.extra_features} ELMo features, "
                              f"the biLM gives {self.bilm.config.dim}")

    @property
    def embedding(self) -> nn.Embedding:
        """The classifier's own word embedding (the vocabulary is the biLM's)."""
        return self.classifier.embedding

    def train(self, mode: bool = True) -> ELMoClassifier:
        super().train(mode)
        self.bilm.eval()
        return self

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """ids (B, T), mask (B, T) bool (default: ids != 0) → logits (B, C)."""
        if mask is None:
            mask = ids != 0
        with torch.no_grad():
            layers = self.bilm.layer_outputs(ids, mask)  # (B, T, L + 1, 2H)
        embedded = torch.cat([self.classifier.embedding(ids), self.mix(layers)], dim=-1)  # (B, T, E + 2H)
        return self.classifier.forward_embedded(embedded, mask)

    def loss(self, batch) -> Tensor:
        return F.cross_entropy(self(batch.ids, batch.mask), batch.labels)


# ---- Transformer classifier ---------------------------------------------------------------------------
@dataclass
class SmallTransformerOptions:
    """The sizes `TransformerClassifierConfig.small` builds a BERT classifier from, to train from scratch:
    the flags of `folio classify train --arch transformer` (its config nests the BERT's own fields)."""

    layers: int = option(4, type=positive_int, help="layers", cli_default=1)
    hidden: int = option(256, type=positive_int, help="the model width", cli_default=64)
    heads: int = option(4, type=positive_int, help="attention heads")
    dropout: float = option(0.1, type=finite_float, help="in the encoder and before the head", cli_default=CLI_DROPOUT)
    pooling: str = option("mean", choices=("mean", "cls"), help="mean over the tokens, or the [CLS] token's vector")


@dataclass
class TransformerClassifierConfig:
    """A Transformer with a pooled linear head: a BERT encoder (its BertConfig fields in `bert`), or a
    causal GPT trunk (its GPTConfig fields in `gpt`: a causal LM pretrained with `folio lm`). `pooler`: the
    [CLS] vector goes through BERT's pooler (dense + tanh) before the head, as next-sentence prediction
    pretrained it (`folio lm train --objective mlm+nsp`); it needs pooling "cls". `cls_id`/`sep_id`: the
    ids of such a model's own [CLS] and [SEP] rows, which its inputs start and end with
    (`folio.tasks.classify.data.TextEncoding`); None for a model whose tokenizer has none."""

    bert: dict | None = None
    num_classes: int = 2
    pooling: str = "mean"  # mean over real tokens | cls (the first token; BERT) | last (the last real token; GPT)
    dropout: float = 0.1  # before the head
    init_from: str | None = None  # where the encoder's weights came from (minilm, a directory), for the record
    arch: str = "transformer_classifier"
    gpt: dict | None = None
    pooler: bool = False
    cls_id: int | None = None
    sep_id: int | None = None
    cli_options: ClassVar[type] = SmallTransformerOptions  # what `folio classify train`'s flags give `small`

    def __post_init__(self):
        if (self.bert is None) == (self.gpt is None):
            raise ConfigError("a Transformer classifier has either a BERT encoder or a GPT trunk")
        if self.pooler and (self.gpt is not None or self.pooling != "cls"):
            raise ConfigError(f"BERT's pooler reads the [CLS] vector of a BERT encoder: it needs --pooling cls, "
                              f"not {self.pooling!r}")
        poolings = ("mean", "cls") if self.gpt is None else ("mean", "last")
        if self.pooling not in poolings:
            kind = "BERT encoder" if self.gpt is None else "causal (GPT)"
            raise ConfigError(f"--pooling {self.pooling!r}: a {kind} classifier pools by {' or '.join(poolings)}")
        check_classes(self.num_classes)
        BertConfig(**self.bert) if self.gpt is None else GPTConfig(**self.gpt)  # fails early on a bad field

    @classmethod
    def small(cls, vocab_size: int, num_classes: int, layers: int = 4, hidden: int = 256, heads: int = 4,
              max_len: int = 512, dropout: float = 0.1, pooling: str = "mean") -> TransformerClassifierConfig:
        """A BERT of the given size, trained from scratch."""
        bert = BertConfig.sized(vocab_size, layers, heads, hidden, context=max_len, dropout=dropout)
        return cls(bert.to_dict(), num_classes, pooling, dropout)

    def describe(self) -> str:
        origin = f" from {self.init_from}" if self.init_from else ""
        if self.gpt is not None:
            g = GPTConfig(**self.gpt)
            return f"causal Transformer (GPT){origin}, {g.layers} blocks, width {g.hidden}, {g.heads} heads"
        b = BertConfig(**self.bert)
        return f"Transformer encoder{origin}, {b.num_hidden_layers} blocks, width {b.hidden_size}, {b.num_attention_heads} heads"

    def to_dict(self) -> dict:
        return asdict(self)


class TransformerClassifier(nn.Module):
    """Token ids (B, T) and mask (True = real token) → logits (B, C): a BERT encoder or a causal GPT trunk,
    pooling over real tokens (or BERT's pooler on [CLS]), a linear head. A causal trunk needs no padding
    mask: right padding comes after every real token, which never attends to it. A BERT encoder also
    reads segments (B, T) (0: a pair's first text, 1: its second; None: 0 everywhere)."""

    def __init__(self, config: TransformerClassifierConfig):
        super().__init__()
        self.config = config
        if config.gpt is not None:
            self.gpt = GPT(GPTConfig(**config.gpt))
            width = self.gpt.config.hidden
        else:
            self.bert = BertEncoder(BertConfig(**config.bert))
            width = self.bert.config.hidden_size
        self.pooler = BertPooler(width) if config.pooler else None
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(width, config.num_classes)

    @property
    def embedding(self) -> nn.Embedding:
        return self.gpt.embedding if self.config.gpt is not None else self.bert.embedding

    def forward_embedded(self, embedded: Tensor, mask: Tensor, segments: Tensor | None = None) -> Tensor:
        """Logits (B, C) from embedded tokens (B, T, C): the entry point for gradient-based explanations."""
        if self.config.gpt is not None:
            if segments is not None:
                raise ConfigError("a causal (GPT) classifier reads one text: it has no segment embeddings for pairs")
            hidden = self.gpt.hidden_states(embedded)  # (B, T, C)
        else:
            hidden = self.bert.forward_embedded(embedded, mask, segments=segments)
        if self.pooler is not None:
            pooled = self.pooler(hidden)  # tanh(dense(hidden[:, 0]))
        elif self.config.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.config.pooling == "last":
            last = (mask.sum(1) - 1).clamp(min=0)  # (B,)
            pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
        else:
            pooled = mean_pool(hidden, mask)
        return self.head(self.dropout(pooled))

    def forward(self, ids: Tensor, mask: Tensor | None = None, segments: Tensor | None = None) -> Tensor:
        """ids (B, T), mask (B, T) bool (default: ids != 0), segments (B, T) or None → logits (B, C)."""
        return self.forward_embedded(self.embedding(ids), ids != 0 if mask is None else mask, segments)

    def loss(self, batch) -> Tensor:
        return F.cross_entropy(self(batch.ids, batch.mask, batch.segments), batch.labels)


__all__ = [
    "ClassifierConfig", "ELMoClassifier", "ELMoClassifierConfig", "POOLINGS", "RecurrentClassifier", "TransformerClassifier", "TransformerClassifierConfig",
    "reverse_within_length",
]


# ---- a classifier started from a language model (ULMFiT; BERT and GPT fine-tuning) ----------------------
def from_language_model(lm: nn.Module, num_classes: int, pooling: str | None = None, dropout: float = 0.1,
                        masking: bool = True, source: str = "the language model") -> tuple[nn.Module, str]:
    """A classifier whose embedding and layers are `lm`'s (a `folio lm` model: GRU/LSTM, GPT, or BERT), with a
    new head; and what was loaded, for the log. The architecture is the language model's; `pooling` (None:
    the family's default), `dropout` and `masking` are the classifier's. A BERT pretrained with next-sentence
    prediction also gives its [CLS] pooler, which starts the head where pooling is "cls" (its default).

    >>> model, loaded = from_language_model(lm_model, num_classes=2)      # doctest: +SKIP
    """
    c = lm.config
    if c.arch in ("gru", "lstm"):
        if not c.embedding_dim:
            raise ConfigError(f"--init-from {source}: the language model reads one-hot input (--embedding-dim 0); "
                              "a classifier needs one trained with --embedding-dim N")
        model = RecurrentClassifier(ClassifierConfig(
            vocab_size=c.vocab_size, num_classes=num_classes, cell=c.arch, layers=c.layers, hidden=c.hidden,
            embedding_dim=c.embedding_dim, bidirectional=False, pooling=pooling or "max_mean", dropout=dropout,
            masking=masking))
        state = {"embedding.weight": lm.embedding.weight}
        for name, value in lm.rnn.named_parameters():  # weight_ih_l{k} → rnns.{k}.0.weight_ih_l0
            stem, layer = name.rsplit("_l", 1)
            state[f"rnns.{layer}.0.{stem}_l0"] = value
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("head.") for k in missing):
            raise CheckpointError(f"{source}: recurrent weights do not map onto the classifier "
                                  f"(missing {missing}, unexpected {unexpected})")
        return model, "embedding and recurrent layers"
    if c.arch == "gpt":
        config = TransformerClassifierConfig(None, num_classes, pooling or "mean", dropout, init_from=source,
                                             gpt={**c.to_dict(), "dropout": dropout})
        model = TransformerClassifier(config)
        model.gpt.load_state_dict(lm.state_dict())
        return model, "GPT embedding and blocks"
    if c.arch == "bert":
        pooling = pooling or ("cls" if c.nsp else "mean")
        bert = c.bert_config()  # every embedding row: the tokenizer's ids, [MASK] (, [CLS], [SEP])
        bert.hidden_dropout_prob = dropout
        specials = c.special_ids()
        pooler = c.nsp and pooling == "cls"
        config = TransformerClassifierConfig(bert.to_dict(), num_classes, pooling, dropout, init_from=source,
                                             pooler=pooler, cls_id=specials.get("cls"), sep_id=specials.get("sep"))
        model = TransformerClassifier(config)
        model.bert.load_state_dict(lm.bert.state_dict())
        if model.pooler is not None:  # the NSP head itself is dropped: the new head reads the pooled vector
            model.pooler.load_state_dict(lm.pooler.state_dict())
        return model, "BERT embedding and blocks" + (" and the [CLS] pooler" if pooler else "")
    raise ConfigError(f"--init-from {source}: a {c.arch} language model does not start a classifier here; give a "
                      "gru, lstm, gpt or bert one (a biLM's layers: --features)")
