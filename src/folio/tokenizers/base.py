"""The one interface every Folio tokenizer implements, and the special-token layouts.

Ids: id 0 is padding wherever a tokenizer has padding, so a mask is always `ids != 0`. Which other
special tokens exist, and at which ids, is data (`specials`), read through `pad_id`, `bos_id`,
`eos_id` and `unk_id` (None where the tokenizer has no such token):

* no specials: a character language model's ids are its characters, 0..V-1;
* `PADDING_ONLY`: a classifier's or language model's words or subwords start at id 1;
* `SEQ2SEQ_SPECIALS`: what a sequence-to-sequence decoder needs (translation, captions): <pad> <s> </s> <unk>
  at ids 0-3.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import torch

from folio.tokenizers.cleaning import TextCleaner

PAD_ID = 0  # padding's id in every tokenizer that has padding
PADDING_ONLY = ("<pad>",)
SEQ2SEQ_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
VOCAB_FILE = "vocab.json"  # a checkpoint directory's tokenizer description (and a character model's whole table)
HF_FILE = "tokenizer.json"  # beside it, a Hugging Face tokenizer's own file

# The names a role's token goes by: Folio's own, and BERT's for a pretrained WordPiece vocabulary.
# (BERT's [CLS]/[SEP] are not begin/end-of-sequence tokens: as in Hugging Face, such a tokenizer has no bos/eos.)
_ROLE_TOKENS = {"pad": ("<pad>", "[PAD]"), "bos": ("<s>",), "eos": ("</s>",), "unk": ("<unk>", "[UNK]")}


class Tokenizer(ABC):
    """Text ↔ ids. `encode` adds no <s> or </s> (batching frames sequences itself; a pretrained tokenizer
    adds the [CLS] … [SEP] its model was trained with); `decode` drops the special tokens.

    `kind` names the family as the CLI does (char, word, bpe, subword, pretrained); `load_tokenizer`
    reads back whatever `save` or `save_pretrained` wrote.

    >>> from folio.tokenizers import fit_tokenizer
    >>> tok = fit_tokenizer("char", ["2019-04-22"], seq2seq=True)
    >>> tok.encode("2019"), tok.decode(tok.encode("2019")), (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id)
    ([7, 5, 6, 9], '2019', (0, 1, 2, 3))
    """

    kind: ClassVar[str]
    cleaner: TextCleaner | None = None  # the cleaning applied before splitting, where there is one

    @property
    @abstractmethod
    def specials(self) -> tuple[str, ...]:
        """The special tokens, in id order."""

    @abstractmethod
    def __len__(self) -> int:
        """How many ids there are (a model's embedding rows)."""

    @abstractmethod
    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        """Text → (its tokens as a user would read them, their ids)."""

    def encode(self, text: str) -> list[int]:
        """Text → ids."""
        return self.tokenize(text)[1]

    def encode_tensor(self, text: str) -> torch.Tensor:
        """Text → a LongTensor of ids (T,)."""
        return torch.tensor(self.encode(text), dtype=torch.long)

    @abstractmethod
    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Ids → text; special tokens read as nothing."""

    @abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """The id of one token (a special's too); None where the vocabulary does not have it."""

    @abstractmethod
    def id_to_token(self, index: int) -> str:
        """The token string of one id (specials included), e.g. a label for an attention map."""

    @abstractmethod
    def to_dict(self) -> dict:
        """Everything needed to rebuild the tokenizer, as JSON-ready data with its "type" (= `kind`)."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict) -> Tokenizer:
        """The tokenizer `data` describes (what `to_dict` gave, or an older file of the same class)."""

    def save(self, path: str | Path) -> None:
        """One JSON file holding the whole tokenizer (a translation or captioning checkpoint's layout)."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    def save_pretrained(self, directory: str | Path) -> None:
        """A checkpoint directory's layout: `vocab.json` (and `tokenizer.json` for a Hugging Face tokenizer)."""
        (Path(directory) / VOCAB_FILE).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    def _role_id(self, role: str) -> int | None:
        for token in _ROLE_TOKENS[role]:
            if token in self.specials:
                return self.token_to_id(token)
        return None

    @property
    def pad_id(self) -> int | None:
        return self._role_id("pad")

    @property
    def bos_id(self) -> int | None:
        return self._role_id("bos")

    @property
    def eos_id(self) -> int | None:
        return self._role_id("eos")

    @property
    def unk_id(self) -> int | None:
        return self._role_id("unk")


class TableTokenizer(Tokenizer):
    """A fixed table: the special tokens at ids 0..k-1, then `symbols` (characters or words) in order."""

    def __init__(self, symbols: Sequence[str], specials: Sequence[str] = ()):
        self._specials = tuple(specials)
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self._specials)} | {s: i + len(self._specials) for i, s in enumerate(self.symbols)}

    @property
    def specials(self) -> tuple[str, ...]:
        return self._specials

    def __len__(self) -> int:
        return len(self._specials) + len(self.symbols)

    def token_to_id(self, token: str) -> int | None:
        return self.index.get(token)

    def id_to_token(self, index: int) -> str:
        first = len(self._specials)
        return self._specials[index] if index < first else self.symbols[index - first]

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        first, symbols, size = len(self._specials), self.symbols, len(self)
        end = first + len(symbols)  # ids from here to `size` are a subclass's extra rows (e.g. OOV buckets)
        return self.join([symbols[i - first] if i < end else self.id_to_token(i) for i in as_id_list(ids) if first <= i < size])

    @abstractmethod
    def join(self, tokens: list[str]) -> str:
        """Tokens (no specials) → text."""


def as_id_list(ids: Iterable[int] | torch.Tensor) -> list[int]:
    return ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)


def as_texts(texts: str | Iterable[str]) -> Iterable[str]:
    """One string is one text (not an iterable of characters)."""
    return [texts] if isinstance(texts, str) else texts
