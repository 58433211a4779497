"""Labelled texts for `folio classify`: the `--data` splits, the tokenizer fitted on them, texts (or pairs
of texts) → ids (`TextEncoding`)."""

from __future__ import annotations

from dataclasses import dataclass
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
from folio.data.sentence_pairs import truncate_pair
from folio.errors import ConfigError, DataError
from folio.models.bert import minilm_directory
from folio.models.classifier import TransformerClassifier
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


@dataclass(frozen=True)
class TextEncoding:
    """How a classifier's texts, or pairs of texts, become ids (and segments), as in training.

    * One text: the tokenizer's ids cut to `max_len` as `truncation` says. A BERT pretrained with
      next-sentence prediction (`cls_id`/`sep_id`: its own rows) reads `[CLS] text [SEP]`, the text cut to
      `max_len` - 2; MiniLM's tokenizer puts its own [CLS] … [SEP] around a text (`wrapped`).
    * A pair (`pairs`): `[CLS] a [SEP] b [SEP]`, segments 0 for `[CLS] a [SEP]` and 1 for `b [SEP]`, where
      the model has [CLS] and [SEP] (an NSP-pretrained BERT, MiniLM); a BERT encoder without them (from
      scratch, or pretrained by masked LM alone) reads `a b` with the same segments: its segment
      embedding marks where b starts. A pair is cut longest-first to `max_len` tokens in all (one token
      at a time from the end of the longer text, as Hugging Face's `longest_first`). A recurrent or
      causal model reads one text and has no segments: `for_model` refuses pairs for it.

    >>> encoding = TextEncoding(max_len=8, pairs=True, cls_id=50, sep_id=51)
    >>> encoding.encode_ids([[1, 2, 3, 4, 5, 6]], [[7, 8]])
    ([[50, 1, 2, 3, 51, 7, 8, 51]], [[0, 0, 0, 0, 0, 1, 1, 1]])
    """

    max_len: int | None = None
    truncation: str = "head"
    pairs: bool = False
    cls_id: int | None = None
    sep_id: int | None = None
    wrapped: bool = False  # the tokenizer itself puts [CLS] … [SEP] around each text (MiniLM's)

    @classmethod
    def for_model(cls, model, tokenizer, max_len: int | None, truncation: str = "head", pairs: bool = False) -> TextEncoding:
        """The encoding a classifier `model` reads with `tokenizer`: its [CLS]/[SEP] (the model config's
        `cls_id`/`sep_id`, or the tokenizer's own); pairs only for a BERT encoder."""
        bert = isinstance(model, TransformerClassifier) and model.config.bert is not None
        if pairs and not bert:
            raise ConfigError("pairs of texts (a text_pair field) need a BERT encoder, which reads segments: "
                              "--init-from a BERT pretrained with --objective mlm+nsp (the best start), "
                              "--arch transformer, or --arch transformer --init-from minilm")
        if getattr(tokenizer, "kind", None) == "pretrained":  # MiniLM: [CLS] and [SEP] are the tokenizer's
            return cls(max_len, truncation, pairs, tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"),
                       wrapped=True)
        if bert and model.config.cls_id is not None:
            if max_len is not None and max_len < (3 if pairs else 2) + 1:
                raise ConfigError(f"--max-len {max_len} leaves no room for text beside [CLS] and [SEP]")
            return cls(max_len, truncation, pairs, model.config.cls_id, model.config.sep_id)
        return cls(max_len, truncation, pairs)

    def encode(self, tokenizer, texts: list[str], text_pairs: list[str] | None = None,
               what: str = "text") -> tuple[list[list[int]], list[list[int]] | None]:
        """Raw strings (and their pairs) → id lists and, for pairs, segment lists (else None); an empty
        text, or one with nothing left after cleaning, is a `DataError` naming it."""
        if (text_pairs is not None) != self.pairs:
            raise DataError("this model classifies pairs of texts: give each text its text_pair (CSV columns "
                            "text,text_pair or JSONL fields \"text\", \"text_pair\")" if self.pairs else
                            "this model classifies single texts, not pairs: drop the text_pair field")
        if text_pairs is None and (self.cls_id is None or self.wrapped):
            return encode_texts(tokenizer, texts, self.max_len, what, self.truncation), None
        first = encode_texts(tokenizer, texts, None, what)
        second = None if text_pairs is None else encode_texts(tokenizer, text_pairs, None, f"{what} pair")
        if self.wrapped:  # the tokenizer's [CLS] … [SEP] come off: the pair gets them once
            first = [ids[1:-1] for ids in first]
            second = [ids[1:-1] for ids in second]
        return self.encode_ids(first, second)

    def encode_ids(self, first: list[list[int]], second: list[list[int]] | None = None) -> tuple[list[list[int]], list[list[int]] | None]:
        """`encode` from the texts' ids (without special tokens)."""
        specials = self.cls_id is not None
        if second is None:  # one text between [CLS] and [SEP]
            keep = None if self.max_len is None else self.max_len - 2
            return [[self.cls_id, *truncate(ids, keep, self.truncation), self.sep_id] for ids in first], None
        budget = None if self.max_len is None else self.max_len - (3 if specials else 0)
        sequences, segments = [], []
        for a, b in zip(first, second, strict=True):
            if budget is not None:
                a, b = truncate_pair(a[::-1], b, budget)  # truncate_pair cuts A from its front: reversed, its end
                a = a[::-1]
            if specials:
                sequences.append([self.cls_id, *a, self.sep_id, *b, self.sep_id])
                segments.append([0] * (len(a) + 2) + [1] * (len(b) + 1))
            else:
                sequences.append([*a, *b])
                segments.append([0] * len(a) + [1] * len(b))
        return sequences, segments

    def to_dict(self) -> dict:
        """What config.json's "text" section adds for it (the ids follow from the model and tokenizer)."""
        return {"pairs": self.pairs}


class NoTokenizer:
    """The tokenizer of a sentence-head model (`--encoder minilm`), which reads raw strings: MiniLM tokenizes on
    its own. With it, `encode_texts` only checks that no text is empty (each one becomes a placeholder id)."""

    kind = "minilm"  # as config.json's "text" section names it

    @staticmethod
    def encode(text: str) -> list[int]:
        return [1]
