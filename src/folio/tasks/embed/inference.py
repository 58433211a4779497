"""The sentence encoder `folio serve` serves (`/v1/embeddings`): MiniLM, or a BERT sentence-encoder directory.

    >>> embedder = SentenceEmbedder.from_pretrained("minilm")                 # doctest: +SKIP
    >>> vectors, tokens = embedder.embed(["A man plays a guitar.", "Stocks fell."])  # doctest: +SKIP
    >>> vectors.shape, tokens                                                  # doctest: +SKIP
    (torch.Size([2, 384]), [9, 5])
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from folio.models.sentence_encoder import SentenceEncoder, load_sentence_encoder
from folio.runtime import select_device


def is_sentence_encoder(source: str | Path) -> bool:
    """Whether `source` is a sentence encoder `folio embed` reads: "minilm", or a Hugging Face BERT directory
    (config.json with `"model_type": "bert"` and no Folio `task`, and tokenizer.json). Reads no weights."""
    if str(source) == "minilm":
        return True
    path = Path(source)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(config, dict) and config.get("model_type") == "bert" and "task" not in config
            and (path / "tokenizer.json").is_file())


class SentenceEmbedder:
    """A frozen sentence encoder: texts → unit vectors (N, dim), and how many tokens it read of each."""

    def __init__(self, encoder: SentenceEncoder, source: str):
        self.encoder = encoder
        self.config = {"task": "embed", "model": {"arch": "bert_sentence_encoder", "source": source, "dim": encoder.dim,
                                                  "max_length": encoder.max_length}}

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str = "cpu") -> SentenceEmbedder:
        encoder = load_sentence_encoder(str(source))
        return cls(encoder.to(select_device(device)), str(source))

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def embed(self, texts: list[str], batch_size: int = 32) -> tuple[torch.Tensor, list[int]]:
        """(N, dim) unit vectors and each text's token count (special tokens included, after truncation)."""
        tokens = [len(e.ids) for e in self.encoder.tokenizer.encode_batch(list(texts))]
        return self.encoder.encode(texts, batch_size), tokens


__all__ = ["SentenceEmbedder", "is_sentence_encoder"]
