"""One token per character: a character language model (ids = characters) and the dates translation task
(<pad> <s> </s> <unk> first). Only the special layout and the unknown-character policy differ."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from folio.errors import ConfigError, VocabularyError
from folio.tokenizers.base import SEQ2SEQ_SPECIALS, TableTokenizer, as_texts

UNKNOWN_POLICIES = ("error", "skip", "unk")


class CharTokenizer(TableTokenizer):
    """Characters in sorted order after the specials.

    `lower=True` lower-cases all text first, as in the book. A character never seen when fitting is
    handled by `unknown`: "error" raises `VocabularyError` naming the character and its position,
    "skip" drops it, "unk" reads it as <unk> (the default where `specials` has one, else "error").
    Encoding is one NumPy gather over a code-point table, so a 5 MB corpus encodes in well under a second.

    >>> lm_chars = CharTokenizer.fit("hello")
    >>> lm_chars.encode("hole"), lm_chars.decode(lm_chars.encode("hole"))
    ([1, 3, 2, 0], 'hole')
    """

    kind = "char"

    def __init__(self, chars: Iterable[str], specials: Sequence[str] = (), lower: bool = False, unknown: str | None = None):
        chars = list(chars)
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise VocabularyError("a character vocabulary needs distinct single characters")
        unknown = unknown or ("unk" if "<unk>" in specials else "error")
        if unknown not in UNKNOWN_POLICIES:
            raise VocabularyError(f"unknown-character policy {unknown!r}: choose one of {UNKNOWN_POLICIES}")
        if unknown == "unk" and "<unk>" not in specials:
            raise ConfigError("unknown='unk' needs an <unk> among the special tokens")
        super().__init__(chars, specials)
        self.lower, self.unknown = lower, unknown
        # A lookup table over code points makes encoding vectorised: one NumPy gather per text.
        self._table = np.full(max((ord(c) for c in chars), default=0) + 1, -1, dtype=np.int64)
        for i, c in enumerate(chars):
            self._table[ord(c)] = i + len(self.specials)

    @classmethod
    def fit(cls, texts: str | Iterable[str], specials: Sequence[str] = (), lower: bool = False,
            unknown: str | None = None, min_count: int = 1) -> CharTokenizer:
        """Every character seen at least `min_count` times in `texts` (one string, or several: an iterable
        of pieces is read one piece at a time, so a corpus larger than memory can be fitted)."""
        counts = np.zeros(0, dtype=np.int64)  # occurrences by code point
        for text in as_texts(texts):
            points = np.frombuffer((text.lower() if lower else text).encode("utf-32-le"), dtype=np.uint32)
            if points.size:
                found = np.bincount(points)
                if len(found) > len(counts):
                    counts = np.pad(counts, (0, len(found) - len(counts)))
                counts[: len(found)] += found
        return cls([chr(point) for point in np.flatnonzero(counts >= max(min_count, 1))], specials, lower, unknown)

    def _lookup(self, text: str) -> tuple[str, np.ndarray]:
        """(the text as read, after lower-casing; its ids (T,) with -1 for characters not in the table)."""
        if self.lower:
            text = text.lower()
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.full(points.shape, -1, dtype=np.int64)
        known = points < len(self._table)
        ids[known] = self._table[points[known]]
        return text, ids

    def _known_ids(self, text: str) -> tuple[str, np.ndarray, np.ndarray | None]:
        """(text as read, ids with the unknown policy applied, the mask of kept characters or None if all are)."""
        text, ids = self._lookup(text)
        missing = ids < 0
        if not missing.any():
            return text, ids, None
        if self.unknown == "error":
            where = np.flatnonzero(missing)
            unseen = sorted({text[i] for i in where[:1000]})
            raise VocabularyError(
                f"character {text[int(where[0])]!r} at position {int(where[0])} is not in the vocabulary "
                f"(unseen: {''.join(unseen)!r}); the model knows {len(self.symbols)} characters"
            )
        if self.unknown == "skip":
            return text, ids[~missing], ~missing
        ids[missing] = self.unk_id
        return text, ids, None

    def encode_tensor(self, text: str) -> torch.Tensor:
        return torch.from_numpy(self._known_ids(text)[1])

    def encode(self, text: str) -> list[int]:
        return self._known_ids(text)[1].tolist()

    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        text, ids, kept = self._known_ids(text)
        tokens = list(text) if kept is None else [c for c, keep in zip(text, kept.tolist(), strict=True) if keep]
        return tokens, ids.tolist()

    def join(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def to_dict(self) -> dict:
        data = {"type": self.kind, "chars": "".join(self.symbols), "lower": self.lower, "unknown": self.unknown}
        if self.specials:
            data["specials"] = list(self.specials)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CharTokenizer:
        if "symbols" in data:  # a translation checkpoint from before folio.tokenizers: <pad> <s> </s> <unk> first
            return cls(data["symbols"], SEQ2SEQ_SPECIALS)
        return cls(data["chars"], data.get("specials", ()), data.get("lower", False), data.get("unknown", "error"))
