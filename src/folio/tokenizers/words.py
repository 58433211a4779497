"""Whole-word tokenizers, for two purposes:

* `WordTokenizer`: a classifier's (or ULMFiT language model's) cleaned words, lossy on purpose: the top V
  words by frequency plus K hashed out-of-vocabulary buckets, id 0 padding. The bucket of an unknown word
  is `crc32(utf-8 bytes) % K`: the same in every process and on every machine (Python's `hash()` is
  salted per process and would not be).
* `WordPunctTokenizer`: words and punctuation marks for a decoder that writes text (translation,
  captions): <pad> <s> </s> <unk> first, and a "▁" on each token that follows a space, so decoding gives
  the text back.

    >>> vocab = WordTokenizer.fit(["good good bad"], vocab_size=10, oov_buckets=4)
    >>> vocab.encode("Good, bad and unseen!")[:2]
    [1, 2]
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from folio.errors import ConfigError
from folio.tokenizers.base import PADDING_ONLY, SEQ2SEQ_SPECIALS, TableTokenizer, as_texts
from folio.tokenizers.cleaning import TextCleaner


def stable_bucket(word: str, buckets: int) -> int:
    """A bucket in [0, buckets) that depends only on the word (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(word.encode("utf-8")) % buckets


def _ranked(texts: Iterable[str], split: Callable[[str], list[str]], min_count: int) -> list[str]:
    """Tokens seen at least `min_count` times, most frequent first (ties alphabetically: fitting is deterministic)."""
    counts = Counter()
    for text in texts:
        counts.update(split(text))
    return sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))


class WordTokenizer(TableTokenizer):
    """Id 0 = padding, 1..V = known words (most frequent first), V+1..V+K = hashed OOV buckets.

    Text is cleaned by `cleaner` (default: `TextCleaner()`), then split into words. Decoding joins the
    words with spaces; a bucket reads "<unk>".
    """

    kind = "word"

    def __init__(self, words: Sequence[str], oov_buckets: int = 1000, cleaner: TextCleaner | None = None):
        if oov_buckets < 1:
            raise ConfigError(f"--oov-buckets must be at least 1 (unknown words need somewhere to go), got {oov_buckets}")
        super().__init__(words, PADDING_ONLY)
        self.oov_buckets = oov_buckets
        self.cleaner = cleaner or TextCleaner()

    @classmethod
    def fit(cls, texts: str | Iterable[str], vocab_size: int = 10_000, oov_buckets: int = 1000, min_count: int = 1,
            cleaner: TextCleaner | None = None) -> WordTokenizer:
        """The `vocab_size` most frequent words of the cleaned `texts`."""
        cleaner = cleaner or TextCleaner()
        return cls(_ranked(as_texts(texts), cleaner.tokens, min_count)[:vocab_size], oov_buckets, cleaner)

    def __len__(self) -> int:
        """Embedding rows: padding + words + buckets."""
        return 1 + len(self.symbols) + self.oov_buckets

    def token_to_id(self, token: str) -> int:
        """Every word has an id: its own, or its bucket's."""
        found = self.index.get(token)
        return found if found is not None else 1 + len(self.symbols) + stable_bucket(token, self.oov_buckets)

    def id_to_token(self, index: int) -> str:
        return super().id_to_token(index) if index <= len(self.symbols) else "<unk>"

    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        tokens = self.cleaner.tokens(text)
        return tokens, [self.token_to_id(t) for t in tokens]

    def join(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def to_dict(self) -> dict:
        return {"type": self.kind, "words": self.symbols, "oov_buckets": self.oov_buckets, "cleaner": self.cleaner.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> WordTokenizer:
        return cls(data["words"], data["oov_buckets"], TextCleaner(**data["cleaner"]))


_WORD = re.compile(r"\s*(\w+|[^\w\s])")
SPACE = "\u2581"  # "▁" marks a token that follows a space, as in SentencePiece, so decoding is exact


class WordPunctTokenizer(TableTokenizer):
    """Words and single punctuation marks, <pad> <s> </s> <unk> first; the `vocab_size` most frequent
    (seen `min_count` times) are kept, any other reads <unk>.

    >>> tok = WordPunctTokenizer.fit(["Hello, world!"])
    >>> tok.tokenize("Hello, world!")[0], tok.decode(tok.encode("Hello, world!"))
    (['▁Hello', ',', '▁world', '!'], 'Hello, world!')
    """

    kind = "word"

    def __init__(self, words: Sequence[str]):
        super().__init__(words, SEQ2SEQ_SPECIALS)

    @classmethod
    def fit(cls, texts: str | Iterable[str], vocab_size: int = 30_000, min_count: int = 1) -> WordPunctTokenizer:
        return cls(_ranked(as_texts(texts), cls.split, min_count)[:vocab_size])

    @staticmethod
    def split(text: str) -> list[str]:
        """Text → tokens, each with a leading "▁" where a space precedes it (and on the first)."""
        return [(SPACE if match.group(0)[0].isspace() else "") + match.group(1) for match in _WORD.finditer(" " + text)]

    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        tokens = self.split(text)
        unk = self.unk_id
        return tokens, [self.index.get(t, unk) for t in tokens]

    def join(self, tokens: list[str]) -> str:
        return "".join(tokens).replace(SPACE, " ").strip()

    def to_dict(self) -> dict:
        return {"type": self.kind, "symbols": self.symbols}  # the layout is always SEQ2SEQ_SPECIALS

    @classmethod
    def from_dict(cls, data: dict) -> WordPunctTokenizer:
        return cls(data["symbols"])
