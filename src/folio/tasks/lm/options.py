"""The options of `folio lm train`."""

from __future__ import annotations

from dataclasses import dataclass, field

from folio.errors import ConfigError
from folio.training.run import RunOptions


@dataclass
class LMTrainOptions(RunOptions):
    """Everything `folio lm train` accepts, with the defaults of the CLI (the run's own fields: `RunOptions`).

    >>> options = LMTrainOptions(corpus="shakespeare", out="runs/lm", model={"arch": "gpt", "layers": 4})
    """

    out: str = "runs/lm"
    corpus: str = "shakespeare"
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    lower: bool = False
    tokenizer: str = "char"  # char | word | bpe
    vocab_size: int = 8000  # words (plus oov_buckets) or BPE tokens; characters are all kept
    oov_buckets: int = 1000
    model: dict = field(default_factory=dict)  # RNNLMConfig or GPTConfig fields (by "arch"), except vocab_size
    seq_len: int = 100
    batch_size: int = 32
    stateful: bool = False
    eval_streams: int = 16

    def validate(self) -> None:
        """Refuse option combinations that cannot train, before any data is read (`ConfigError` names the fix)."""
        super().validate()
        context = self.model.get("context")  # a Transformer's positions (a resumed run keeps its checkpoint's)
        if context is not None and self.resume is None and self.seq_len > context:
            raise ConfigError(f"--seq-len {self.seq_len} is longer than --context {context}: "
                              "lower --seq-len or raise --context")
