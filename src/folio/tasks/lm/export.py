"""`folio export` for language models (`folio.export` runs, checks and writes the graphs).

* recurrent language model: `(ids (B, T) int64, h (L, B, H)[, c]) → (logits (B, T, V), h[, c])`, one call
  per chunk of text, the state passed back in: generation steps one character at a time with T = 1;
* GPT: `ids (B, T ≤ context) → logits (B, T, V)` (no cache: each call reads its window).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from folio.errors import ConfigError
from folio.export_api import Graph
from folio.tasks.lm import LanguageModel


class _RecurrentLM(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.lstm = isinstance(model.rnn, nn.LSTM)

    def forward(self, ids: Tensor, h: Tensor, c: Tensor | None = None):
        logits, state = self.model(ids, (h, c) if self.lstm else h)
        return (logits, *state) if self.lstm else (logits, state)


class _GPT(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor) -> Tensor:
        return self.model._run(ids, None)[0]


def graphs(directory: Path, fmt: str) -> tuple[list[Graph], None]:
    """The one graph of the language model in `directory`."""
    model = LanguageModel.from_pretrained(directory).model
    if model.kind != "causal":
        raise ConfigError(f"{directory} is a {model.config.arch} encoder, which does not generate: export the classifier it starts")
    vocab = model.config.vocab_size
    if model.rewind is not None:  # a Transformer (a cache), not a recurrent state
        context = model.config.context
        return [Graph("model", _GPT(model), lambda b, t: (torch.randint(vocab, (b, min(t, context))),), ["ids"], ["logits"],
                       {"ids": {0: "batch", 1: "steps"}, "logits": {0: "batch", 1: "steps"}})], None
    layers, hidden = model.config.layers, model.config.hidden
    lstm = isinstance(model.rnn, nn.LSTM)

    def example(b, t):
        state = (torch.randn(layers, b, hidden) * 0.5,) * (2 if lstm else 1)
        return (torch.randint(vocab, (b, t)), *state)

    states = ["h", "c"] if lstm else ["h"]
    axes = {"ids": {0: "batch", 1: "steps"}, "logits": {0: "batch", 1: "steps"}}
    axes.update({name: {1: "batch"} for name in states + [f"{s}_out" for s in states]})
    return [Graph("model", _RecurrentLM(model), example, ["ids", *states], ["logits", *(f"{s}_out" for s in states)], axes)], None
