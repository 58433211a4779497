"""`fit_tokenizer(kind, texts)` and `load_tokenizer(path)`: every tokenizer class, reached by its `kind`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from folio.errors import CheckpointError, ConfigError
from folio.tokenizers.base import HF_FILE, SEQ2SEQ_SPECIALS, VOCAB_FILE, Tokenizer
from folio.tokenizers.chars import CharTokenizer
from folio.tokenizers.hf import ByteLevelBPETokenizer, MetaspaceBPETokenizer, PretrainedTokenizer, WordPieceTokenizer
from folio.tokenizers.pretrained_lm import PretrainedLMTokenizer
from folio.tokenizers.words import WordPunctTokenizer, WordTokenizer

# (kind, seq2seq) → how to fit it. A classifier or language model reads ids where only 0 (padding, if
# any) is special; a sequence-to-sequence decoder also needs <s>, </s> and <unk>, and writes text back,
# so its word and BPE tokenizers keep punctuation and spacing.
FITTERS: dict[tuple[str, bool], Callable[..., Tokenizer]] = {
    ("char", False): CharTokenizer.fit,
    ("char", True): partial(CharTokenizer.fit, specials=SEQ2SEQ_SPECIALS),
    ("word", False): WordTokenizer.fit,
    ("word", True): WordPunctTokenizer.fit,
    ("bpe", False): ByteLevelBPETokenizer.fit,
    ("bpe", True): MetaspaceBPETokenizer.fit,
    ("subword", False): WordPieceTokenizer.fit,
}
HF_KINDS = ("bpe", "subword", "pretrained", "pretrained_lm")  # kinds whose checkpoint directory holds the library's tokenizer.json


def fit_tokenizer(kind: str, texts: str | Iterable[str], vocab_size: int | None = None, seq2seq: bool = False,
                  **options) -> Tokenizer:
    """A tokenizer of `kind` (char, word, bpe, subword) fitted on `texts` (one string, or several).

    `vocab_size` bounds the words or subwords (characters are all kept); `seq2seq=True` gives the
    <pad> <s> </s> <unk> layout a sequence-to-sequence model reads. `options` go to the class's `fit`
    (e.g. `lower` for characters, `oov_buckets` and `cleaner` for a classifier's words).

    >>> fit_tokenizer("word", ["a b b"], vocab_size=10, oov_buckets=2).encode("b a c")
    [1, 2, 4]
    """
    fit = FITTERS.get((kind, seq2seq))
    if fit is None:
        known = ", ".join(k for k, s in FITTERS if s == seq2seq)
        raise ConfigError(f"tokenizer {kind!r}: choose one of {known}")
    if vocab_size is not None and kind != "char":
        options["vocab_size"] = vocab_size
    return fit(texts, **options)


def tokenizer_class(data: dict) -> type[Tokenizer]:
    """The class that reads `data` (a saved tokenizer), from its "type" and, where two classes share a
    kind, from what the data holds."""
    kind = data["type"]
    if kind == "char":
        return CharTokenizer
    if kind == "word":  # a translation or captioning file keeps its words under "symbols"
        return WordPunctTokenizer if "symbols" in data else WordTokenizer
    if kind == "bpe":
        raw = data["tokenizer"]
        pre_tokenizer = (json.loads(raw) if isinstance(raw, str) else raw).get("pre_tokenizer") or {}
        return ByteLevelBPETokenizer if pre_tokenizer.get("type") == "ByteLevel" else MetaspaceBPETokenizer
    if kind == "subword":
        return WordPieceTokenizer
    if kind == "pretrained":
        return PretrainedTokenizer
    if kind == "pretrained_lm":
        return PretrainedLMTokenizer
    raise CheckpointError(f"unknown tokenizer type {kind!r}")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer saved at `path`: a checkpoint directory (its `vocab.json`, and the library's
    `tokenizer.json` beside it for BPE and WordPiece), or one JSON file (`save`'s layout, e.g. a
    translation checkpoint's `src_tokenizer.json`). Every format Folio has written loads.

    >>> tok = load_tokenizer("runs/imdb")                       # doctest: +SKIP
    >>> tok.kind, tok.pad_id                                    # doctest: +SKIP
    ('word', 0)
    """
    path = Path(path)
    file = path / VOCAB_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if path.is_dir() and data.get("type") in HF_KINDS and "tokenizer" not in data:
            file = path / HF_FILE
            data["tokenizer"] = file.read_text(encoding="utf-8")
        cls = tokenizer_class(data)
        return cls.from_dict(data)
    except Exception as err:  # unreadable or damaged: OSError, bad JSON, a missing key, the library's own error type
        raise CheckpointError(f"cannot read the tokenizer {file}: {err}") from err
