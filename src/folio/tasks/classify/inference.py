"""`TextClassifier`: a trained classifier as a Python object, raw strings in, labels out.

    >>> from folio.tasks.classify import TextClassifier
    >>> clf = TextClassifier.from_pretrained("runs/imdb")                 # doctest: +SKIP
    >>> clf.predict(["A wonderful, moving film.", "Dull and far too long."])  # doctest: +SKIP
    [{'label': 'pos', 'probability': 0.97, ...}, {'label': 'neg', 'probability': 0.94, ...}]

A checkpoint directory holds everything a raw string needs: `config.json` (cleaning, truncation,
labels, model shape), `vocab.json` (and `tokenizer.json` for subwords) and `model.safetensors`.
A classifier of pairs of texts takes each text's second in `text_pairs`:
`clf.predict(["It rains."], text_pairs=["Take a coat."])`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from folio.data.reviews import LabeledTexts
from folio.errors import CheckpointError, ConfigError, DataError
from folio.models.registry import load_checkpoint
from folio.models.sentence_encoder import SentenceEncoder, load_sentence_encoder
from folio.runtime import select_device
from folio.tasks.classify.data import NoTokenizer, TextEncoding
from folio.tasks.classify.metrics import classification_metrics, score_features, score_sequences
from folio.tasks.classify.recipe import TASK
from folio.tokenizers import truncate


class TextClassifier:
    """A trained classifier with its cleaning, vocabulary and labels: raw strings in, labels out.

    >>> clf = TextClassifier.from_pretrained("runs/imdb")            # doctest: +SKIP
    >>> clf.predict(["What a waste of two hours."])[0]["label"]      # doctest: +SKIP
    'neg'
    """

    def __init__(self, model: nn.Module, tokenizer, config: dict, encoder: SentenceEncoder | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.labels: list[str] = config["labels"]
        self.max_len: int | None = config.get("text", {}).get("max_len")
        self.truncation: str = config.get("text", {}).get("truncation", "head")
        self.encoder = encoder  # a frozen sentence encoder, for sentence-head models (raw strings → vectors)
        self.encoding = TextEncoding.for_model(model, tokenizer, self.max_len, self.truncation,
                                               pairs=config.get("text", {}).get("pairs", False))

    @property
    def pairs(self) -> bool:
        """Whether the model classifies pairs of texts (text, text_pair) rather than single texts."""
        return self.encoding.pairs

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> TextClassifier:
        """The classifier saved in `directory` (a `folio classify train --out` directory), on `device`."""
        target = select_device(device)
        model, tokenizer, config = load_checkpoint(directory, TASK, target)
        labels = config.get("labels")
        if not isinstance(labels, list) or len(labels) != model.config.num_classes:
            raise CheckpointError(f"{directory}/config.json: labels {labels!r} for {model.config.num_classes} classes")
        if tokenizer is None:  # a head over a frozen sentence encoder's vectors: the encoder reads the raw strings
            encoder = load_sentence_encoder(model.config.encoder, model.config.max_length).to(target)
            return cls(model, NoTokenizer, config, encoder)
        return cls(model, tokenizer, config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _probabilities(self, texts: list[str], batch_size: int, what: str,
                       text_pairs: list[str] | None = None) -> torch.Tensor:
        sequences, segments = self.encoding.encode(self.tokenizer, texts, text_pairs, what)
        if self.encoder is None:
            return score_sequences(self.model, sequences, batch_size, segments)
        with torch.no_grad():
            features = self.encoder.encode(texts, batch_size=batch_size)  # (N, D)
        return score_features(self.model, features)

    def encode(self, texts: list[str], what: str = "input", text_pairs: list[str] | None = None) -> list[list[int]]:
        """Token ids of each text (or pair of texts: [CLS] a [SEP] b [SEP]), cut as in training; a `DataError`
        names an empty or letter-less text, or pairs given to a single-text model and the other way round."""
        return self.encoding.encode(self.tokenizer, texts, text_pairs, what)[0]

    def predict_proba(self, texts: list[str], batch_size: int = 64, text_pairs: list[str] | None = None) -> torch.Tensor:
        """(N, C) class probabilities; a pair classifier takes each text's second text in `text_pairs`."""
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(text_pairs, str):
            text_pairs = [text_pairs]
        return self._probabilities(texts, batch_size, "input", text_pairs)

    def predict(self, texts: list[str], batch_size: int = 64, text_pairs: list[str] | None = None) -> list[dict]:
        """Per text (or pair: `text_pairs`): its label, that label's probability and every label's probability.

        >>> clf.predict(["The film opens in Rome."], text_pairs=["It ends in Paris."])  # doctest: +SKIP
        """
        probs = self.predict_proba(texts, batch_size, text_pairs)
        out = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"label": self.labels[best], "probability": row[best],
                        "probabilities": dict(zip(self.labels, row, strict=True))})
        return out

    def evaluate(self, data: LabeledTexts, batch_size: int = 128) -> dict:
        """`classification_metrics` of this model on labelled texts (their labels must be the model's)."""
        if data.label_names != self.labels:
            raise DataError(f"the data's labels {data.label_names} are not the model's {self.labels}")
        return classification_metrics(data.labels, self._probabilities(data.texts, batch_size, "text", data.text_pairs))

    def explain(self, text: str, steps: int = 50, target: str | None = None) -> dict:
        """Per-token integrated gradients of log p(target | text) (default: the predicted label).

        The baseline is the all-padding input (zero embeddings, same mask); the contributions add up to
        log p(target | text) − log p(target | baseline), up to the Riemann-sum error of `steps`.
        """
        if self.encoder is not None:
            raise ConfigError("explain works with recurrent models; this one is a head over frozen MiniLM vectors")
        if not hasattr(self.model, "forward_embedded"):
            raise ConfigError("explain attributes a score to the model's own word embeddings; this classifier also "
                              "reads a frozen biLM's features (--features), which it cannot attribute")
        if self.pairs:
            raise ConfigError("explain reads one text; this model classifies pairs of texts (text, text_pair)")
        if not text or not text.strip():
            raise DataError("the text to explain is empty")
        tokens, ids = self.tokenizer.tokenize(text)
        if not ids:
            raise DataError(f"the text to explain ({text[:40]!r}) has no letters left after cleaning; nothing to explain")
        if self.encoding.cls_id is not None and not self.encoding.wrapped:  # a BERT pretrained with NSP reads [CLS] text [SEP]
            keep = None if self.max_len is None else self.max_len - 2
            tokens = ["[CLS]", *truncate(tokens, keep, self.truncation), "[SEP]"]
            ids = [self.encoding.cls_id, *truncate(ids, keep, self.truncation), self.encoding.sep_id]
        else:
            tokens, ids = truncate(tokens, self.max_len, self.truncation), truncate(ids, self.max_len, self.truncation)
        ids_t = torch.tensor([ids], device=self.device)
        mask = torch.ones_like(ids_t, dtype=torch.bool)
        with torch.no_grad():
            embedded = self.model.embedding(ids_t)  # (1, T, E)
            probs = self.model.forward_embedded(embedded, mask).float().softmax(-1)[0]
        index = int(probs.argmax()) if target is None else self.labels.index(target)
        alphas = torch.arange(1, steps + 1, device=self.device, dtype=embedded.dtype).view(-1, 1, 1) / steps  # (S, 1, 1)
        scaled = (alphas * embedded).detach().requires_grad_(True)  # (S, T, E)
        with torch.enable_grad():
            log_probs = self.model.forward_embedded(scaled, mask.expand(steps, -1)).float().log_softmax(-1)
            (grads,) = torch.autograd.grad(log_probs[:, index].sum(), scaled)
        scores = (grads.mean(0) * embedded[0]).sum(-1)  # (T,)
        return {"label": self.labels[index], "probability": float(probs[index]),
                "tokens": tokens, "scores": scores.tolist()}
