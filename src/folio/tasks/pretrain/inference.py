"""`folio pretrain`'s Python API: a pretrained encoder (a masked-LM BERT, ELMo's biLM) with its vocabulary,
and the figures of its pretraining objectives on a text or a corpus.

    >>> from folio.tasks.pretrain import PretrainedEncoder
    >>> encoder = PretrainedEncoder.from_pretrained("runs/bert")              # doctest: +SKIP
    >>> encoder.evaluate(open("test.txt").read())["loss"]                     # doctest: +SKIP
    >>> encoder.evaluate_sentence_pairs("imdb", "test")["nsp_accuracy"]       # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from folio.data.sentence_pairs import check_documents, corpus_documents, held_out_pairs, tokenize_documents
from folio.errors import CheckpointError, ConfigError, DataError
from folio.models.registry import load_checkpoint, model_class, model_section, read_config
from folio.runtime import select_device
from folio.tasks.lm.data import Vocabulary, encode
from folio.tasks.lm.metrics import loss_report
from folio.tasks.pretrain.metrics import evaluate_ids, sentence_pair_metrics

TASK = "lm"  # the "task" of their checkpoints: see folio.tasks.pretrain.recipe

# What to do with a pretrained encoder instead of generating text (by its `kind`: see folio.models)
NOT_GENERATING = {
    "masked": "a masked LM (--arch bert) does not generate text; use it to start a classifier: "
              "folio classify train --init-from MODEL_DIR",
    "bidirectional": "a biLM (--arch bilm) does not generate text; it gives contextual word vectors: "
                     "folio embed --model MODEL_DIR TEXT, or folio classify train --features MODEL_DIR",
}


def model_kind(directory: str | Path) -> str | None:
    """The `kind` of the language model in a Folio model directory ("causal", "masked", "bidirectional"; see
    folio.models), from its config.json alone (no weights read); None for anything else."""
    try:
        return model_class(model_section(read_config(directory, TASK))).kind
    except CheckpointError:
        return None


def is_encoder_directory(directory: str | Path) -> bool:
    """Whether `directory` holds a model `folio pretrain` reads (a masked LM or a biLM)."""
    return model_kind(directory) in NOT_GENERATING


class PretrainedEncoder:
    """A pretrained encoder and its vocabulary: its pretraining figures on a text (`evaluate`) or on a
    corpus's sentence pairs (`evaluate_sentence_pairs`). Its uses are elsewhere: a BERT starts a classifier
    (`folio classify train --init-from DIR`), a biLM gives contextual word vectors (`folio embed --model DIR`).

    >>> encoder = PretrainedEncoder.from_pretrained("runs/bilm")    # doctest: +SKIP
    >>> encoder.evaluate("the bank of the river")["forward_loss"]   # doctest: +SKIP
    """

    def __init__(self, model: torch.nn.Module, vocab: Vocabulary, config: dict | None = None):
        self.model = model.eval()
        self.vocab = vocab
        self.config = config or {}

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> PretrainedEncoder:
        """A `folio pretrain train` (or `folio lm train --arch bert|bilm`) directory loaded onto `device`; a
        causal language model's is refused by name."""
        model, vocab, config = load_checkpoint(directory, TASK, select_device(device))
        if model.kind not in NOT_GENERATING:
            raise CheckpointError(f"{directory} holds a {model.kind} language model (--arch {model.config.arch}), "
                                  f"not a pretrained encoder: folio lm evaluate --model {directory}")
        return cls(model, vocab, config)

    def evaluate(self, text: str, seq_len: int = 256) -> dict:
        """A masked LM's loss on masked tokens (fixed positions), or a biLM's loss in each direction and their
        mean, on `text`, in nats per token with bits and perplexity (`folio.tasks.lm.metrics.loss_report`)."""
        return self.evaluate_ids(encode(self.vocab, text), seq_len)

    def evaluate_ids(self, ids: torch.Tensor, seq_len: int = 256) -> dict:
        """`evaluate` on the ids (T,) of a text, in any integer type (a token cache's memory-mapped split)."""
        if len(ids) < 2:
            raise DataError("the text to evaluate needs at least two tokens")
        figures = evaluate_ids(self.model, ids, seq_len)
        report = loss_report(figures["loss"], figures["tokens"], self.vocab.kind)
        for direction in ("forward", "backward"):  # a biLM's: each with its own perplexity
            if f"{direction}_loss" in figures:
                loss = figures[f"{direction}_loss"]
                report.update({f"{direction}_loss": loss, f"{direction}_perplexity": math.exp(loss)})
        return report

    def evaluate_sentence_pairs(self, corpus: str, split: str = "test", seed: int = 0) -> dict:
        """Next-sentence prediction (a BERT pretrained with `--objective mlm+nsp`) on fixed pairs of one split
        of `corpus`'s documents, split as in training ("all": every document), one pair per document of two
        sentences or more, IsNext and NotNext in turn, masked with `seed`: {"nsp_accuracy", "nsp_loss",
        "masked_loss" (per masked token of the pairs), "pairs"}.

        >>> encoder.evaluate_sentence_pairs("imdb", "test")["nsp_accuracy"]    # doctest: +SKIP
        0.83
        """
        if not getattr(self.model.config, "nsp", False):
            raise ConfigError("next-sentence figures need a BERT pretrained with --objective mlm+nsp")
        splits = corpus_documents(corpus, tuple(self.config.get("data", {}).get("split", (0.9, 0.05, 0.05))))
        documents = [d for name in ("train", "valid", "test") for d in splits[name]] if split == "all" else splits[split]
        docs = tokenize_documents(documents, self.vocab)
        check_documents(docs, f"corpus {corpus}, {split} split")
        specials = self.model.config.special_ids()
        pairs = held_out_pairs(docs, self.model.config.context - 3, specials["cls"], specials["sep"], seed=seed)
        figures = sentence_pair_metrics(self.model, pairs, seed=seed)
        return {name: figures[name] for name in ("nsp_accuracy", "nsp_loss", "masked_loss", "pairs")}
