"""The sentence encoder `folio serve` serves (`/v1/embeddings`): MiniLM, or a BERT sentence-encoder directory.

    >>> embedder = SentenceEmbedder.from_pretrained("minilm")                 # doctest: +SKIP
    >>> vectors, tokens = embedder.embed(["A man plays a guitar.", "Stocks fell."])  # doctest: +SKIP
    >>> vectors.shape, tokens                                                  # doctest: +SKIP
    (torch.Size([2, 384]), [9, 5])
"""

from __future__ import annotations

from pathlib import Path

import torch

from folio.models import sentence_encoder
from folio.models.sentence_encoder import SentenceEncoder
from folio.runtime import select_device


class SentenceEmbedder:
    """A frozen sentence encoder: texts → unit vectors (N, dim), and how many tokens it read of each."""

    def __init__(self, encoder: SentenceEncoder, config: dict):
        self.encoder = encoder
        self.config = config

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str = "cpu") -> SentenceEmbedder:
        """"minilm", or a Hugging Face BERT sentence-encoder directory (`folio.models.sentence_encoder.load_checkpoint`)."""
        # (the registry's reader of these: `FOREIGN`; called directly, so that a source that is not one gets the
        # reader's own error saying what is missing)
        encoder, _, config = sentence_encoder.load_checkpoint(source, select_device(device))
        return cls(encoder, config)

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def embed(self, texts: list[str], batch_size: int = 32) -> tuple[torch.Tensor, list[int]]:
        """(N, dim) unit vectors and each text's token count (special tokens included, after truncation)."""
        tokens = [len(e.ids) for e in self.encoder.tokenizer.encode_batch(list(texts))]
        return self.encoder.encode(texts, batch_size), tokens


__all__ = ["SentenceEmbedder"]
