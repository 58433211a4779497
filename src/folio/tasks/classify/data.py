"""Labelled texts for `folio classify`: the `--data` splits, the tokenizer fitted on them, texts → ids."""

from __future__ import annotations

from pathlib import Path

from folio.data.reviews import (
    LabeledTexts,
    download_aclimdb,
    imdb_splits,
    load_aclimdb,
    read_labeled_file,
    reber_dataset,
    stratified_split,
)
from folio.errors import ConfigError, DataError
from folio.models.bert import minilm_directory
from folio.tasks.classify.options import ClassifyTrainOptions
from folio.tokenizers import PretrainedTokenizer, TextCleaner, WordPieceTokenizer, WordTokenizer, truncate

EMBEDDED = ("imdb", "rt", "reber", "aclimdb")


def load_splits(data: str, split_seed: int = 0, valid_fraction: float = 0.1, reber_size: int = 10_000,
                labels: list[str] | None = None) -> dict[str, LabeledTexts]:
    """train / valid (/ test where the data has one) for a `--data` value."""
    if data in ("imdb", "rt"):
        return imdb_splits(data, valid_fraction=valid_fraction, seed=split_seed)
    if data == "reber":
        return {"train": reber_dataset(reber_size, split_seed), "valid": reber_dataset(max(reber_size // 10, 200), split_seed + 1),
                "test": reber_dataset(max(reber_size // 10, 200), split_seed + 2)}
    if data == "aclimdb":
        data = str(download_aclimdb())
    path = Path(data)
    if path.is_dir():
        full = load_aclimdb(path, "train")
        test = load_aclimdb(path, "test") if (path / "test").is_dir() else None
    elif path.is_file():
        full, test = read_labeled_file(path, labels), None
    else:
        raise DataError(f"--data {data!r}: not one of {', '.join(EMBEDDED)}, an aclImdb directory or a CSV/JSONL file")
    if labels is not None and full.label_names != labels:
        raise DataError(f"{data}: labels {full.label_names} do not match --labels {labels}")
    rest, valid = stratified_split(full.labels, valid_fraction, split_seed + 1)
    splits = {"train": full.subset(rest), "valid": full.subset(valid)}
    if test is not None:
        splits["test"] = test
    return splits


def build_tokenizer(options: ClassifyTrainOptions, texts: list[str]):
    """A new run's tokenizer: MiniLM's own (`--init-from minilm`), or words / subwords fitted on `texts`."""
    if options.init_from == "minilm":
        return PretrainedTokenizer.from_file(minilm_directory() / "tokenizer.json", options.max_len, options.truncation)
    cleaner = TextCleaner(**options.text)
    if options.tokenizer == "word":
        return WordTokenizer.fit(texts, options.vocab_size, options.oov_buckets, cleaner=cleaner)
    if options.tokenizer == "subword":
        return WordPieceTokenizer.fit(texts, options.vocab_size, cleaner)
    raise ConfigError(f"--tokenizer {options.tokenizer!r}: choose word or subword")


def encode_texts(tokenizer, texts: list[str], max_len: int | None, what: str = "text", truncation: str = "head") -> list[list[int]]:
    """Raw strings → id lists cut to `max_len` (see `truncate`); an empty text, or one with nothing left
    after cleaning, is an error."""
    out = []
    for number, text in enumerate(texts, 1):
        if not text or not text.strip():
            raise DataError(f"{what} {number} is empty; give some text to classify")
        ids = tokenizer.encode(text)
        if not ids:
            raise DataError(f"{what} {number} ({text[:40]!r}) has no letters left after cleaning; nothing to classify")
        out.append(truncate(ids, max_len, truncation))
    return out


class NoTokenizer:
    """The tokenizer of a sentence-head model (`--encoder minilm`), which reads raw strings: MiniLM tokenizes on
    its own. With it, `encode_texts` only checks that no text is empty (each one becomes a placeholder id)."""

    kind = "minilm"  # as config.json's "text" section names it

    @staticmethod
    def encode(text: str) -> list[int]:
        return [1]
