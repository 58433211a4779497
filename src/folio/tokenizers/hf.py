"""Tokenizers backed by Hugging Face `tokenizers`: byte-level BPE (language models), Metaspace BPE
(translation), WordPiece trained on cleaned text (classifiers) and a pretrained model's own tokenizer
(MiniLM's lower-casing WordPiece with [CLS] … [SEP]).

Id 0 is Folio's padding. A vocabulary with its own padding special (<pad> or [PAD]) must have it at
id 0; one without (byte-level BPE, the trained WordPiece) has the library's ids shifted up by one, and
id 0 reads <pad>.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

from folio.errors import ConfigError
from folio.tokenizers.base import HF_FILE, PAD_ID, SEQ2SEQ_SPECIALS, VOCAB_FILE, Tokenizer, as_id_list, as_texts
from folio.tokenizers.cleaning import BREAK, TextCleaner, truncate


def library():
    """The `tokenizers` module, or a ConfigError saying how to install it."""
    try:
        import tokenizers
    except ModuleNotFoundError as err:
        raise ConfigError("this tokenizer needs Hugging Face tokenizers: pip install tokenizers") from err
    return tokenizers


def library_tokenizer(raw: str | dict):
    """A `tokenizers.Tokenizer` from its JSON (a file's text, or the parsed data embedded in a Folio file)."""
    return library().Tokenizer.from_str(raw if isinstance(raw, str) else json.dumps(raw))


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizers.Tokenizer` (`self.tokenizer`) behind Folio's interface."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        added = tokenizer.get_added_tokens_decoder()  # id → AddedToken
        library_specials = [(i, added[i].content) for i in sorted(added) if added[i].special]
        pad = next((i for i, token in library_specials if token in ("<pad>", "[PAD]")), None)
        if pad not in (PAD_ID, None):
            raise ConfigError(f"this tokenizer's padding token is id {pad}, not {PAD_ID}, which Folio's padding and masks rely on")
        self.offset = 1 if pad is None else 0  # added to the library's ids
        self._specials = ("<pad>",) * self.offset + tuple(token for _, token in library_specials)

    @property
    def specials(self) -> tuple[str, ...]:
        return self._specials

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size() + self.offset

    def prepare(self, text: str) -> str:
        """The text the library tokenizer reads (a subclass's cleaning)."""
        return text

    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        encoding = self.tokenizer.encode(self.prepare(text))
        return list(encoding.tokens), [i + self.offset for i in encoding.ids]

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        ids = [i - self.offset for i in as_id_list(ids) if i >= self.offset]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        if self.offset and token == "<pad>":
            return 0
        found = self.tokenizer.token_to_id(token)
        return None if found is None else found + self.offset

    def id_to_token(self, index: int) -> str:
        return "<pad>" if index < self.offset else self.tokenizer.id_to_token(index - self.offset)

    def config(self) -> dict:
        """What `to_dict` holds beside the library's own JSON (in a checkpoint directory: `vocab.json`)."""
        return {"type": self.kind}

    def to_dict(self) -> dict:
        return {**self.config(), "tokenizer": json.loads(self.tokenizer.to_str())}

    def save_pretrained(self, directory: str | Path) -> None:
        self.tokenizer.save(str(Path(directory) / HF_FILE))
        (Path(directory) / VOCAB_FILE).write_text(json.dumps(self.config()), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict) -> HFTokenizer:
        return cls(library_tokenizer(data["tokenizer"]))


class ByteLevelBPETokenizer(HFTokenizer):
    """Byte-level BPE (GPT-2 style) on raw text: no cleaning, every string round-trips exactly
    (`decode(encode(t)) == t`), so a language model can write punctuation, case and line breaks.
    Ids are shifted by one so that 0 stays padding.
    """

    kind = "bpe"
    block_lines = 64  # `encode` reads a long text this many lines (`str.splitlines`) at a time

    @classmethod
    def fit(cls, texts: str | Iterable[str], vocab_size: int = 4000) -> ByteLevelBPETokenizer:
        hf = library()
        tokenizer = hf.Tokenizer(hf.models.BPE())
        tokenizer.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = hf.decoders.ByteLevel()
        alphabet = hf.pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet):
            raise ConfigError(f"--vocab-size {vocab_size} is too small for byte-level BPE: it needs at least {len(alphabet)}")
        trainer = hf.trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False)
        tokenizer.train_from_iterator(as_texts(texts), trainer=trainer)
        return cls(tokenizer)

    def encode(self, text: str) -> list[int]:
        """Long texts are encoded a block of lines at a time (in parallel); the ids still decode to `text`."""
        lines = text.splitlines(keepends=True)
        if len(lines) <= 1:
            return [i + 1 for i in self.tokenizer.encode(text).ids]
        size = self.block_lines
        blocks = ["".join(lines[i : i + size]) for i in range(0, len(lines), size)]
        return [i + 1 for encoding in self.tokenizer.encode_batch(blocks) for i in encoding.ids]

    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        """Tokens as text (a byte-level token that ends inside a character reads "\ufffd")."""
        ids = self.encode(text)
        return [self.decode([i]) for i in ids], ids


class MetaspaceBPETokenizer(HFTokenizer):
    """Subword BPE over words and punctuation marks ("▁" marks a preceding space, as in SentencePiece),
    with <pad> <s> </s> <unk> trained in at ids 0-3: a translation model's source or target side.

    >>> tok = MetaspaceBPETokenizer.fit(["the cat sat on the mat"] * 10, vocab_size=40)   # doctest: +SKIP
    """

    kind = "bpe"

    @classmethod
    def fit(cls, texts: str | Iterable[str], vocab_size: int = 8000, min_count: int = 2) -> MetaspaceBPETokenizer:
        hf = library()
        tokenizer = hf.Tokenizer(hf.models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = hf.pre_tokenizers.Sequence([hf.pre_tokenizers.Metaspace(), hf.pre_tokenizers.Punctuation()])
        tokenizer.decoder = hf.decoders.Metaspace()
        trainer = hf.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_count, special_tokens=list(SEQ2SEQ_SPECIALS),
                                         show_progress=False)
        tokenizer.train_from_iterator(list(as_texts(texts)), trainer)
        return cls(tokenizer)


class WordPieceTokenizer(HFTokenizer):
    """WordPiece subwords trained on text after `cleaner` (a classifier's `--tokenizer subword`); the
    library's ids are shifted by one, so its [UNK] is id 1."""

    kind = "subword"

    def __init__(self, tokenizer, cleaner: TextCleaner | None = None):
        super().__init__(tokenizer)
        self.cleaner = cleaner or TextCleaner()

    @classmethod
    def fit(cls, texts: str | Iterable[str], vocab_size: int = 8000, cleaner: TextCleaner | None = None) -> WordPieceTokenizer:
        hf = library()
        cleaner = cleaner or TextCleaner()
        tokenizer = hf.Tokenizer(hf.models.WordPiece(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = hf.pre_tokenizers.WhitespaceSplit()
        trainer = hf.trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["[UNK]"], show_progress=False)
        tokenizer.train_from_iterator((cleaner.clean(t) for t in as_texts(texts)), trainer=trainer)
        return cls(tokenizer, cleaner)

    def prepare(self, text: str) -> str:
        return self.cleaner.clean(text)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Pieces joined back into words; [UNK] stays visible."""
        return " ".join(self.id_to_token(i) for i in as_id_list(ids) if i > 0).replace(" ##", "")

    def config(self) -> dict:
        return {"type": self.kind, "cleaner": self.cleaner.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> WordPieceTokenizer:
        return cls(library_tokenizer(data["tokenizer"]), TextCleaner(**data["cleaner"]))


class PretrainedTokenizer(HFTokenizer):
    """A pretrained model's own tokenizer (a Hugging Face `tokenizer.json`, e.g. MiniLM's lower-casing
    WordPiece with [CLS] … [SEP]), its output cut to `max_length` tokens (see `truncate`). Its [PAD]
    must be id 0. The only cleaning is `<br />` → space: the tokenizer normalises the rest itself.
    """

    kind = "pretrained"

    def __init__(self, tokenizer, max_length: int = 256, truncation: str = "head"):
        super().__init__(tokenizer)
        truncate([], max_length, truncation)  # checks the choice
        self.max_length, self.truncation = max_length, truncation
        if truncation == "head":
            tokenizer.enable_truncation(max_length)
        else:  # cut after encoding, keeping [CLS] at the start and [SEP] at the end
            tokenizer.no_truncation()
        tokenizer.no_padding()

    @classmethod
    def from_file(cls, path: str | Path, max_length: int = 256, truncation: str = "head") -> PretrainedTokenizer:
        """A `tokenizer.json` as a pretrained model ships it."""
        return cls(library().Tokenizer.from_file(str(path)), max_length, truncation)

    def prepare(self, text: str) -> str:
        return BREAK.sub(" ", text)

    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        tokens, ids = super().tokenize(text)
        return truncate(tokens, self.max_length, self.truncation), truncate(ids, self.max_length, self.truncation)

    def config(self) -> dict:
        return {"type": self.kind, "max_length": self.max_length, "truncation": self.truncation}

    @classmethod
    def from_dict(cls, data: dict) -> PretrainedTokenizer:
        return cls(library_tokenizer(data["tokenizer"]), data["max_length"], data.get("truncation", "head"))
