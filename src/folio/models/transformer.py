"""Transformer models built from `folio.nn.transformer`: a decoder-only GPT and a BERT-style encoder.

GPT follows the recurrent language model's contract, `forward(ids, state) -> (logits, state)`, where the
state is a key/value cache. So `folio lm` trains, evaluates and samples it with the same code: each new
token costs one position's computation. When the cache would pass the context length, the model keeps
the last half of the context, recomputes its cache once, and goes on (a sliding window).

    >>> gpt = GPT(GPTConfig(vocab_size=65, layers=2, heads=2, hidden=32, context=16))
    >>> logits, state = gpt(torch.zeros(3, 10, dtype=torch.long))
    >>> logits.shape, state.length
    (torch.Size([3, 10, 65]), 10)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import CheckpointError, ConfigError
from folio.nn.masks import lengths_to_mask
from folio.nn.transformer import PositionalEncoding, TransformerBlock


def normal_init(module: nn.Module) -> None:
    """GPT-2 / BERT initialisation: weights N(0, 0.02²), biases zero (LayerNorm keeps its ones and zeros)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def check_shape(config, arch: str) -> None:
    """The checks every `folio lm` Transformer config shares: its arch, positive sizes, whole heads, dropout."""
    if config.arch != arch:
        raise ConfigError(f"{type(config).__name__} arch must be {arch!r}, got {config.arch!r}")
    for name in ("vocab_size", "layers", "heads", "hidden", "context", "ff_mult"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.hidden % config.heads:
        raise ConfigError(f"--hidden {config.hidden} must be divisible by --heads {config.heads}")
    for name in ("dropout", "inner_dropout"):
        value = getattr(config, name, None)
        if value is not None and not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")


@dataclass
class GPTConfig:
    vocab_size: int
    arch: str = "gpt"
    layers: int = 4
    heads: int = 4
    hidden: int = 192  # the model width (embedding size)
    context: int = 128  # positions the model attends over
    dropout: float = 0.1  # on the embeddings and each sub-layer's output (GPT-2's embd/resid dropout)
    inner_dropout: float | None = None  # on attention weights and feed-forward hidden units; None: `dropout`
    positions: str = "learned"  # learned | sinusoidal (added to the embeddings) | rope (rotary, in attention)
    ff_mult: int = 4

    def __post_init__(self):
        check_shape(self, "gpt")
        if self.positions not in ("learned", "sinusoidal", "rope"):
            raise ConfigError(f"positions {self.positions!r}: choose learned, sinusoidal or rope")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GPTState:
    """What generation carries between steps: the tokens in the window and each layer's key/value cache."""

    tokens: Tensor  # (B, S)
    caches: list  # per layer: (keys, values), each (B, heads, S, head_dim)

    @property
    def length(self) -> int:
        return self.tokens.size(1)


class GPT(nn.Module):
    """Token embedding + positions → pre-LN causal blocks → LayerNorm → a head tied to the embedding."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.hidden)
        rope = c.positions == "rope"
        self.positions = None if rope else PositionalEncoding(c.hidden, c.context, learned=c.positions == "learned")
        self.dropout = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.hidden, c.heads, c.ff_mult * c.hidden, c.dropout, norm_first=True,
                             rotary_len=c.context if rope else 0, inner_dropout=c.inner_dropout)
            for _ in range(c.layers)
        )
        self.norm = nn.LayerNorm(c.hidden)
        self.head = nn.Linear(c.hidden, c.vocab_size, bias=False)
        self.head.weight = self.embedding.weight
        self.apply(normal_init)
        for block in self.blocks:  # GPT-2: residual projections shrink with depth
            for proj in (block.self_attn.out_proj, block.ff.fc2):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * c.layers))

    def _add_positions(self, x: Tensor, offset: int = 0) -> Tensor:
        return x if self.positions is None else self.positions(x, offset)  # rope: in the attention instead

    def _run(self, ids: Tensor, state: GPTState | None, need_weights: bool = False) -> tuple[Tensor, GPTState | None, list]:
        offset = 0 if state is None else state.length
        x = self.dropout(self._add_positions(self.embedding(ids), offset))  # (B, T, C)
        caches, weights = [], []
        for i, block in enumerate(self.blocks):
            cache = None if state is None else {"self": state.caches[i]}
            x, extras = block(x, causal=True, cache=cache, need_weights=need_weights)
            caches.append(extras["self"])
            weights.append(extras["self_weights"])
        logits = self.head(self.norm(x))  # (B, T, V)
        if self.training and not need_weights:
            return logits, None, weights  # training never carries a cache
        tokens = ids if state is None else torch.cat([state.tokens, ids], dim=1)
        return logits, GPTState(tokens, caches), weights

    def forward(self, ids: Tensor, state: GPTState | None = None) -> tuple[Tensor, GPTState | None]:
        """ids (B, T) → logits (B, T, V) and the cache; any T, with a sliding window past the context."""
        context = self.config.context
        if state is None and ids.size(1) <= context:
            logits, state, _ = self._run(ids, None)
            return logits, state
        keep = context // 2  # tokens of context kept when the window slides
        pieces = []
        for chunk in ids.split(max(1, context - keep), dim=1):
            if state is not None and state.length + chunk.size(1) > context:
                kept = state.tokens[:, state.length - keep :]
                logits, state, _ = self._run(torch.cat([kept, chunk], dim=1), None)
                logits = logits[:, kept.size(1) :]
            else:
                logits, state, _ = self._run(chunk, state)
            pieces.append(logits)
        return torch.cat(pieces, dim=1), state

    def hidden_states(self, embedded: Tensor) -> Tensor:
        """Token embeddings (B, T ≤ context, C) → the final LayerNorm's output (B, T, C), causally."""
        if embedded.size(1) > self.config.context:
            raise ConfigError(f"{embedded.size(1)} tokens is more than the model's context of {self.config.context}")
        x = self.dropout(self._add_positions(embedded))
        for block in self.blocks:
            x, _ = block(x, causal=True)
        return self.norm(x)

    def attention_weights(self, ids: Tensor) -> list[Tensor]:
        """Per layer, the self-attention weights (B, heads, T, T) for ids (B, T ≤ context)."""
        if ids.size(1) > self.config.context:
            raise ConfigError(f"{ids.size(1)} tokens is more than the model's context of {self.config.context}")
        return self._run(ids, None, need_weights=True)[2]

    def loss(self, batch) -> Tensor:
        """Mean next-token cross-entropy (nats) over windows of at most `context` tokens."""
        if batch.inputs.size(1) > self.config.context:
            raise ConfigError(
                f"training windows of {batch.inputs.size(1)} tokens are longer than the context "
                f"({self.config.context}): lower --seq-len or raise --context"
            )
        logits, _ = self(batch.inputs)
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch.targets.reshape(-1))


# ---- BERT-style encoder ------------------------------------------------------------------------------
@dataclass
class BertConfig:
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


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """The mean of hidden states (B, T, C) over real tokens (mask (B, T), True = real) → (B, C)."""
    keep = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1e-9)


@dataclass
class TransformerClassifierConfig:
    """A Transformer with a pooled linear head: a BERT encoder (its BertConfig fields in `bert`), or a
    causal GPT trunk (its GPTConfig fields in `gpt`: a causal LM pretrained with `folio lm`)."""

    bert: dict | None = None
    num_classes: int = 2
    pooling: str = "mean"  # mean over real tokens | cls (the first token; BERT) | last (the last real token; GPT)
    dropout: float = 0.1  # before the head
    init_from: str | None = None  # where the encoder's weights came from (minilm, a directory), for the record
    type: str = "transformer_classifier"
    gpt: dict | None = None

    def __post_init__(self):
        if (self.bert is None) == (self.gpt is None):
            raise ConfigError("a Transformer classifier has either a BERT encoder or a GPT trunk")
        poolings = ("mean", "cls") if self.gpt is None else ("mean", "last")
        if self.pooling not in poolings:
            kind = "BERT encoder" if self.gpt is None else "causal (GPT)"
            raise ConfigError(f"--pooling {self.pooling!r}: a {kind} classifier pools by {' or '.join(poolings)}")
        if self.num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {self.num_classes}")
        BertConfig(**self.bert) if self.gpt is None else GPTConfig(**self.gpt)  # fails early on a bad field

    @classmethod
    def small(cls, vocab_size: int, num_classes: int, layers: int = 4, hidden: int = 256, heads: int = 4,
              max_len: int = 512, dropout: float = 0.1, pooling: str = "mean") -> TransformerClassifierConfig:
        """A BERT of the given size, trained from scratch."""
        if hidden % heads:
            raise ConfigError(f"--hidden {hidden} must be divisible by --heads {heads}")
        bert = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                          intermediate_size=4 * hidden, max_position_embeddings=max_len, layer_norm_eps=1e-12,
                          hidden_dropout_prob=dropout)
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
    pooling over real tokens, a linear head. A causal trunk needs no padding mask: right padding comes
    after every real token, which never attends to it."""

    def __init__(self, config: TransformerClassifierConfig):
        super().__init__()
        self.config = config
        if config.gpt is not None:
            self.gpt = GPT(GPTConfig(**config.gpt))
            width = self.gpt.config.hidden
        else:
            self.bert = BertEncoder(BertConfig(**config.bert))
            width = self.bert.config.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(width, config.num_classes)

    @property
    def embedding(self) -> nn.Embedding:
        return self.gpt.embedding if self.config.gpt is not None else self.bert.embedding

    def forward_embedded(self, embedded: Tensor, mask: Tensor) -> Tensor:
        if self.config.gpt is not None:
            hidden = self.gpt.hidden_states(embedded)  # (B, T, C)
        else:
            hidden = self.bert.forward_embedded(embedded, mask)
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.config.pooling == "last":
            last = (mask.sum(1) - 1).clamp(min=0)  # (B,)
            pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
        else:
            pooled = mean_pool(hidden, mask)
        return self.head(self.dropout(pooled))

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.forward_embedded(self.embedding(ids), ids != 0 if mask is None else mask)

    def loss(self, batch) -> Tensor:
        return F.cross_entropy(self(batch.ids, batch.mask), batch.labels)


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
        return BertConfig(vocab_size=self.vocab_size + 1, hidden_size=self.hidden, num_hidden_layers=self.layers,
                          num_attention_heads=self.heads, intermediate_size=self.ff_mult * self.hidden,
                          max_position_embeddings=self.context, hidden_dropout_prob=self.dropout)

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


# ---- encoder–decoder -------------------------------------------------------------------------------
@dataclass
class TransformerSeq2SeqConfig:
    src_vocab_size: int
    tgt_vocab_size: int
    layers: int = 3  # encoder blocks, and as many decoder blocks
    heads: int = 4
    hidden: int = 256
    ff_dim: int = 1024
    dropout: float = 0.1
    label_smoothing: float = 0.1
    share_embeddings: bool = False  # one table for source, target and output (needs a joint vocabulary)
    norm_first: bool = True  # pre-LN (trains without a careful warm-up); False: the original post-LN
    pad_id: int = 0
    sos_id: int = 1
    eos_id: int = 2
    max_src_len: int = 256
    max_tgt_len: int = 1024  # positions the decoder has

    def __post_init__(self):
        for name in ("src_vocab_size", "tgt_vocab_size", "layers", "heads", "hidden", "ff_dim", "max_src_len", "max_tgt_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ConfigError(f"--hidden {self.hidden} must be divisible by --heads {self.heads}")
        if not 0 <= self.dropout < 1 or not 0 <= self.label_smoothing < 1:
            raise ConfigError("dropout and label_smoothing must be in [0, 1)")
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


__all__ = [
    "GPT", "BertConfig", "BertEncoder", "BertMaskedLM", "MaskedLMConfig", "MaskedLanguageModel", "TransformerClassifier", "TransformerClassifierConfig", "mask_tokens",
    "mean_pool", "GPTConfig", "GPTState", "TransformerDecoderState", "TransformerSeq2Seq",
    "TransformerSeq2SeqConfig",
]
