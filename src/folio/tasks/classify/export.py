"""`folio export` for classifiers (`folio.export` runs, checks and writes the graph).

* classifier (recurrent or Transformer): `(ids (B, T) int64, mask (B, T) bool) → probabilities (B, C)`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from folio.errors import ConfigError
from folio.export_api import Graph
from folio.tasks.classify import TextClassifier


class _Classifier(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.model(ids, mask).softmax(-1)


def graphs(directory: Path, fmt: str) -> tuple[list[Graph], None]:
    """The one graph of the classifier in `directory`."""
    clf = TextClassifier.from_pretrained(directory)
    if clf.encoder is not None:
        raise ConfigError(f"{directory} is a head over frozen MiniLM vectors: export the encoder's features instead")
    if clf.pairs:
        raise ConfigError(f"{directory} classifies pairs of texts, which the exported graph (ids, mask) cannot take "
                          "yet: export a single-text classifier")
    vocab = clf.model.embedding.num_embeddings  # recurrent and Transformer classifiers both expose it

    def example(b, t):
        lengths = torch.randint(1, t + 1, (b,))
        lengths[0] = t
        mask = torch.arange(t)[None, :] < lengths[:, None]
        return torch.randint(1, vocab, (b, t)) * mask, mask

    return [Graph("model", _Classifier(clf.model), example, ["ids", "mask"], ["probabilities"],
                   {"ids": {0: "batch", 1: "steps"}, "mask": {0: "batch", 1: "steps"}, "probabilities": {0: "batch"}})], None
