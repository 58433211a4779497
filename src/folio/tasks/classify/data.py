"""Labelled texts for `folio classify`: the `--data` splits (and the one `evaluate` scores), the tokenizer
fitted on them, texts (or pairs of texts) → ids (`TextEncoding`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from folio.data.download import sha256_of
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
from folio.data.splits import EVALUATION_SPLITS, SPLITS, USER_FRACTIONS, split_by_group
from folio.errors import ConfigError, DataError
from folio.models.bert import minilm_directory
from folio.tasks.classify.options import ClassifyTrainOptions
from folio.tokenizers import PretrainedTokenizer, TextCleaner, WordPieceTokenizer, WordTokenizer, truncate

EMBEDDED = ("imdb", "rt", "reber", "aclimdb")


def user_fractions(valid_fraction: float) -> tuple[float, float, float]:
    """train/valid/test of a user's file: `USER_FRACTIONS` (80/10/10) with `--valid-fraction` as the valid share."""
    test = USER_FRACTIONS[2]
    if not 0 < valid_fraction < 1 - test:
        raise ConfigError(f"--valid-fraction {valid_fraction}: a file's test split takes {test}, so give less than "
                          f"{1 - test:g} to leave rows for training")
    return (round(1 - valid_fraction - test, 10), valid_fraction, test)


def split_file(data: LabeledTexts, fractions, seed: int) -> dict[str, LabeledTexts]:
    """A user's labelled file split train/valid/test (`folio.data.splits.split_by_group`): stratified by
    label, identical texts (or pairs) in one split, drawn by `seed` alone."""
    keys = data.texts if data.text_pairs is None else list(zip(data.texts, data.text_pairs, strict=True))
    split = split_by_group(keys, fractions, seed, strata=data.labels)
    return {name: data.subset(split[name]) for name in SPLITS}


def load_splits(data: str, split_seed: int = 0, valid_fraction: float = 0.1, reber_size: int = 10_000,
                labels: list[str] | None = None) -> dict[str, LabeledTexts]:
    """train / valid / test for a `--data` value (an aclImdb directory without test/ has no test). A user's
    file is split by `split_file`; each split's `meta["split"]` then records how (the file's absolute path,
    fractions, seed, rows and sha256), as config.json keeps it for `evaluation_split`."""
    if data in ("imdb", "rt"):
        return imdb_splits(data, valid_fraction=valid_fraction, seed=split_seed)
    if data == "reber":
        return {"train": reber_dataset(reber_size, split_seed), "valid": reber_dataset(max(reber_size // 10, 200), split_seed + 1),
                "test": reber_dataset(max(reber_size // 10, 200), split_seed + 2)}
    if data == "aclimdb":
        data = str(download_aclimdb())
    path = Path(data)
    if path.is_file():
        fractions = user_fractions(valid_fraction)
        full = read_labeled_file(path, labels)
        full.meta = {"split": {"data": str(path.resolve()), "fractions": list(fractions), "split_seed": split_seed,
                               "rows": len(full), "sha256": sha256_of(path)}}
        return split_file(full, fractions, split_seed)
    if not path.is_dir():
        raise DataError(f"--data {data!r}: not one of {', '.join(EMBEDDED)}, an aclImdb directory or a CSV/JSONL file")
    full = load_aclimdb(path, "train")
    if labels is not None and full.label_names != labels:
        raise DataError(f"{data}: labels {full.label_names} do not match --labels {labels}")
    rest, valid = stratified_split(full.labels, valid_fraction, split_seed + 1)
    splits = {"train": full.subset(rest), "valid": full.subset(valid)}
    if (path / "test").is_dir():
        splits["test"] = load_aclimdb(path, "test")
    return splits


def evaluation_split(saved: dict, data: str | None, split: str, labels: list[str]) -> tuple[LabeledTexts, str, str | None]:
    """What `folio classify evaluate --data DATA --split SPLIT` scores, for a model whose config.json "data"
    section is `saved`: (the texts, the data's name, a warning or None).

    Named data and aclImdb directories give their own splits. A CSV/JSONL file is split exactly as training
    split it (the fractions and seed saved); `all` is every split (every row of a file). A file that is not
    the one the model was trained on (another sha256 or row count) is split the same way, with a warning.
    """
    if split not in EVALUATION_SPLITS:
        raise ConfigError(f"--split {split!r}: choose train, valid, test or all")
    spec = data or saved.get("data", "imdb")
    if spec in EMBEDDED or Path(spec).is_dir():
        splits = load_splits(spec, saved.get("split_seed", 0), saved.get("valid_fraction", 0.1))
        if split == "all":
            return _joined([splits[name] for name in splits]), spec, None
        if split not in splits:
            raise DataError(f"--data {spec} has no {split!r} split (it has {', '.join(splits)}, all)")
        return splits[split], spec, None
    full = read_labeled_file(spec, labels)
    if split == "all":
        return full, spec, None
    trained_on = saved.get("data", "imdb")
    if "fractions" not in saved and Path(trained_on).is_file():
        raise DataError(f"this model was trained on {trained_on} before folio held out a test split of a file, so "
                        f"its training rows cannot be told apart: evaluate --split all (training rows included) "
                        "or train it again")
    fractions, seed = saved.get("fractions", USER_FRACTIONS), saved.get("split_seed", 0)
    warning = None
    if "sha256" not in saved:
        warning = (f"{spec} is not the data this model was trained on ({trained_on}): scoring its {split} split "
                   f"({'/'.join(f'{100 * f:g}' for f in fractions)}, seed {seed}); --split all scores every row")
    elif (saved["sha256"], saved.get("rows")) != (sha256_of(Path(spec)), len(full)):
        warning = (f"{spec} ({len(full)} rows) is not the file this model was trained on ({trained_on}, "
                   f"{saved.get('rows')} rows, another sha256): its {split} split is not the one training held out")
    return split_file(full, fractions, seed)[split], spec, warning


def _joined(parts: list[LabeledTexts]) -> LabeledTexts:
    """The splits of one data set as one (`--split all`)."""
    pairs = None if parts[0].text_pairs is None else [p for part in parts for p in part.text_pairs]
    return LabeledTexts([t for part in parts for t in part.texts], [y for part in parts for y in part.labels],
                        parts[0].label_names, parts[0].source, parts[0].meta, pairs)


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
        bert = getattr(model.config, "bert", None) is not None  # a BERT encoder reads segments
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
