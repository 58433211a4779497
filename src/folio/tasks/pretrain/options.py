"""The options of `folio pretrain train` (and of `folio lm train --arch bert|bilm`, which hands over to it)."""

from __future__ import annotations

from dataclasses import dataclass

from folio.errors import ConfigError
from folio.tasks.lm.options import LMTrainOptions


@dataclass
class PretrainOptions(LMTrainOptions):
    """A language model's corpus, vocabulary and windows (`LMTrainOptions`), for an encoder: `model` holds
    MaskedLMConfig fields (`"arch": "bert"`, the default) or BiLMConfig fields (`"arch": "bilm"`), except
    vocab_size.

    >>> options = PretrainOptions(corpus="imdb", out="runs/bert", tokenizer="word", model={"objective": "mlm+nsp"})
    """

    out: str = "runs/pretrain"

    def validate(self) -> None:
        """Refuse option combinations that cannot train, before any data is read (`ConfigError` names the fix)."""
        super().validate()
        if self.model.get("objective") == "mlm+nsp" and self.tokenizer == "char" and self.resume is None:
            raise ConfigError("--objective mlm+nsp reads sentences as words or subwords, and its [CLS] and [SEP] "
                              "tokens need a vocabulary with padding: give --tokenizer word or --tokenizer bpe")
