"""The options of `folio translate train`."""

from __future__ import annotations

from dataclasses import dataclass, field

from folio.errors import ConfigError
from folio.tasks.translate.data import TranslateData
from folio.training.config import TrainConfig
from folio.training.run import RunOptions


@dataclass
class TranslateTrainOptions(RunOptions):
    """Everything `folio translate train` accepts, with the CLI's defaults (the run's own fields: `RunOptions`).

    >>> options = TranslateTrainOptions(data=TranslateData("dates"), out="runs/dates", arch="transformer")
    """

    out: str = "runs/translate"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_time=600))
    data: TranslateData = field(default_factory=TranslateData)
    tokenizer: str = "auto"  # auto (char for dates, bpe otherwise) | char | word | bpe
    vocab_size: int = 8000  # word / bpe
    reverse_source: bool = False
    max_src_len: int = 0  # 0: the longest training source; longer training pairs are dropped
    max_tgt_len: int = 0  # 0: no limit on training targets
    arch: str = "rnn"  # a MODEL_FAMILIES key
    model: dict = field(default_factory=dict)  # the family's config fields except vocabulary sizes and ids
    batch_size: int = 64
    eval_batch_size: int = 256

    def validate(self) -> None:
        """Refuse option combinations that cannot train, before any data is read (`ConfigError` names the fix)."""
        super().validate()
        for flag, value in (("--max-src-len", self.max_src_len), ("--max-tgt-len", self.max_tgt_len)):
            if value < 0:
                raise ConfigError(f"{flag} must be 0 (no limit) or more, got {value}")
