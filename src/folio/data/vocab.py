"""A character vocabulary: fit, encode, decode, save and load as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from folio.errors import CheckpointError, VocabularyError

UNKNOWN_POLICIES = ("error", "skip")


class CharVocab:
    """Maps characters to ids 0..V-1 in sorted order.

    `lower=True` lower-cases all text first, as in the book. Characters never seen when fitting are
    handled by `unknown`: `"error"` (default) raises `VocabularyError` naming the character and its
    position; `"skip"` drops them silently.

    >>> vocab = CharVocab.fit("hello")
    >>> vocab.decode(vocab.encode("hole"))
    'hole'
    """

    kind = "char"

    def __init__(self, chars: Iterable[str], lower: bool = False, unknown: str = "error"):
        self.chars = list(chars)
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise VocabularyError("a character vocabulary needs distinct single characters")
        if unknown not in UNKNOWN_POLICIES:
            raise VocabularyError(f"unknown-character policy {unknown!r}: choose one of {UNKNOWN_POLICIES}")
        self.lower = lower
        self.unknown = unknown
        self.index = {c: i for i, c in enumerate(self.chars)}
        # A lookup table over code points makes encoding vectorised: one NumPy gather per text.
        self._table = np.full(max((ord(c) for c in self.chars), default=0) + 1, -1, dtype=np.int64)
        for i, c in enumerate(self.chars):
            self._table[ord(c)] = i

    @classmethod
    def fit(cls, text: str, lower: bool = False, unknown: str = "error") -> CharVocab:
        return cls(sorted(set(text.lower() if lower else text)), lower=lower, unknown=unknown)

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """Text → LongTensor of ids (T,)."""
        if self.lower:
            text = text.lower()
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.full(points.shape, -1, dtype=np.int64)
        known = points < len(self._table)
        ids[known] = self._table[points[known]]
        missing = ids < 0
        if missing.any():
            if self.unknown == "error":
                pos = int(np.flatnonzero(missing)[0])
                unseen = sorted({text[i] for i in np.flatnonzero(missing)[:1000]})
                raise VocabularyError(
                    f"character {text[pos]!r} at position {pos} is not in the vocabulary "
                    f"(unseen: {''.join(unseen)!r}); the model knows {len(self)} characters"
                )
            ids = ids[~missing]
        return torch.from_numpy(ids)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict:
        return {"type": "char", "chars": "".join(self.chars), "lower": self.lower, "unknown": self.unknown}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CharVocab:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("type") != "char":
                raise CheckpointError(f"{path} is not a character vocabulary (type {data.get('type')!r})")
            return cls(data["chars"], lower=data.get("lower", False), unknown=data.get("unknown", "error"))
        except (OSError, ValueError, KeyError) as err:
            raise CheckpointError(f"cannot read vocabulary {path}: {err}") from err
