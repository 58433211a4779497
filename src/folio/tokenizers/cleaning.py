"""What happens to text before a tokenizer splits it (`TextCleaner`) and to a long text's tokens after (`truncate`).

    >>> TextCleaner().tokens("Great film!<br />Loved it, didn't you?")
    ['great', 'film', 'loved', 'it', "didn't", 'you']
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from folio.errors import ConfigError

BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# Anything that is not a letter or an apostrophe: non-word characters, digits and underscores.
_NOT_LETTER = re.compile(r"[^\w']|[\d_]")


@dataclass
class TextCleaner:
    """The book's cleaning, with its choices as options: cut to the first N characters, `<br />` → space,
    everything but letters and apostrophes → space, split on whitespace.

    max_chars: keep only the first N characters (the book: 300; None keeps everything).
    lower: lower-case (the book does not; GloVe's vocabulary is lower-case).
    level: "word" splits on whitespace; "char" gives every remaining non-space character (Reber strings).
    """

    max_chars: int | None = None
    lower: bool = True
    level: str = "word"

    def __post_init__(self):
        if self.level not in ("word", "char"):
            raise ConfigError(f"text level {self.level!r}: choose word or char")
        if self.max_chars is not None and self.max_chars < 1:
            raise ConfigError(f"--max-chars must be at least 1, got {self.max_chars}")

    def clean(self, text: str) -> str:
        if self.max_chars is not None:
            text = text[: self.max_chars]
        text = _NOT_LETTER.sub(" ", BREAK.sub(" ", text))
        return text.lower() if self.lower else text

    def tokens(self, text: str) -> list[str]:
        cleaned = self.clean(text)
        return [c for c in cleaned if not c.isspace()] if self.level == "char" else cleaned.split()

    def to_dict(self) -> dict:
        return asdict(self)


TRUNCATIONS = ("head", "head_tail")


def truncate(items: list, max_len: int | None, how: str = "head") -> list:
    """Keep at most `max_len` items: the first ones ("head"), or the first quarter and the last three
    quarters ("head_tail", after Sun et al. 2019: a review's verdict is often at its end)."""
    if how not in TRUNCATIONS:
        raise ConfigError(f"--truncation {how!r}: choose one of {', '.join(TRUNCATIONS)}")
    if not max_len or len(items) <= max_len:
        return items
    if how == "head":
        return items[:max_len]
    head = max_len // 4
    return items[:head] + items[len(items) - (max_len - head) :]
