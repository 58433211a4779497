"""The options of `folio classify train`, and the combinations it refuses."""

from __future__ import annotations

from dataclasses import dataclass, field

from folio.errors import ConfigError
from folio.training.config import TrainConfig
from folio.training.run import RunOptions

TRANSFORMER_MAX_LEN = 512  # positions of the Transformer classifiers (MiniLM's own limit)


@dataclass
class ClassifyTrainOptions(RunOptions):
    """Everything `folio classify train` accepts, with the defaults of the CLI (the run's own fields: `RunOptions`).

    >>> options = ClassifyTrainOptions(data="imdb", out="runs/imdb", model={"hidden": 64, "pooling": "max_mean"})
    """

    data: str = "imdb"  # imdb | rt | reber | aclimdb (download) | an aclImdb directory | a CSV/JSONL file
    out: str = "runs/classify"
    text: dict = field(default_factory=dict)  # TextCleaner fields: max_chars, lower, level
    tokenizer: str = "word"  # word | subword
    vocab_size: int = 20_000  # top-V words (or the subword vocabulary size); the book: 10,000
    oov_buckets: int = 1000
    max_len: int | None = 400  # tokens kept per text; None keeps all
    truncation: str = "head"  # which tokens a longer text keeps: head | head_tail
    embeddings: str | None = None  # None | "glove"
    encoder: str | None = None  # None: the recurrent model; "minilm": frozen MiniLM features + a small head
    init_from: str | None = None  # "minilm" (with arch transformer), or a `folio lm` checkpoint directory (ULMFiT)
    features: str | None = None  # a `folio lm --arch bilm` directory: its frozen ELMo mix beside the embedding
    head_hidden: int = 0  # the sentence head's hidden layer (0: linear)
    encoder_max_length: int = 256  # MiniLM tokens per text
    embedding_lr_scale: float = 1.0  # discriminative learning rate for the embedding
    layer_lr_decay: float = 1.0  # ULMFiT's discriminative rates: each layer down from the head learns at lr / this
    model: dict = field(default_factory=dict)  # ClassifierConfig fields except vocab_size, num_classes; or
    # {"arch": "transformer", "layers", "hidden", "heads", "dropout", "pooling"}
    batch_size: int = 64
    labels: list[str] | None = None  # fix the label set (file data); None: read from the data
    valid_fraction: float = 0.1
    split_seed: int = 0  # the held-out test split depends on this alone
    reber_size: int = 10_000
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_time=600))
    eval_batch_size: int = 128

    @property
    def transformer(self) -> bool:
        """Whether the model is a Transformer classifier (from scratch or MiniLM), not a recurrent one."""
        return self.model.get("arch") == "transformer"

    def validate(self) -> None:
        """Refuse option combinations that cannot train, before any data is read (`ConfigError` names the fix)."""
        super().validate()
        if self.embeddings not in (None, "glove"):
            raise ConfigError(f"--embeddings {self.embeddings!r}: choose none or glove")
        if self.max_len is not None and self.max_len < 1:
            raise ConfigError(f"--max-len must be at least 1, got {self.max_len}")
        if self.transformer and (self.max_len is None or self.max_len > TRANSFORMER_MAX_LEN):
            raise ConfigError(f"a Transformer classifier reads at most {TRANSFORMER_MAX_LEN} tokens: "
                              f"give --max-len {TRANSFORMER_MAX_LEN} or less")
        if self.init_from == "minilm" and not self.transformer:
            raise ConfigError("--init-from minilm fine-tunes a Transformer: add --arch transformer")
        if self.init_from not in (None, "minilm") and self.embeddings is not None:
            raise ConfigError("--init-from a language model brings its own embeddings: drop --embeddings")
        if self.features is not None:
            clash = [flag for flag, value in (("--init-from", self.init_from), ("--encoder", self.encoder))
                     if value is not None]
            if self.transformer:
                clash.append("--arch transformer")
            if clash:
                raise ConfigError(f"--features reads a biLM under a recurrent classifier with the biLM's tokenizer: "
                                  f"drop {', '.join(clash)}")
        if self.layer_lr_decay < 1:
            raise ConfigError(f"--layer-lr-decay must be at least 1 (lower layers learn slower), got {self.layer_lr_decay}")
        if self.encoder is not None:
            if self.encoder != "minilm":
                raise ConfigError(f"--encoder {self.encoder!r}: the only sentence encoder is minilm")
            if self.resume is not None:
                raise ConfigError("--resume is not supported with --encoder (the head trains in seconds; train again)")
