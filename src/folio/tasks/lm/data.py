"""The vocabulary of a language model: characters, words with hashed OOV buckets, or byte-level BPE."""

from __future__ import annotations

from pathlib import Path

import torch

from folio.errors import ConfigError
from folio.tokenizers import TextCleaner, Tokenizer, fit_tokenizer

TOKENIZERS = ("char", "word", "bpe")
Vocabulary = Tokenizer


def fit_vocab(kind: str, text: str, vocab_size: int = 8000, oov_buckets: int = 1000, lower: bool = False) -> Vocabulary:
    """A vocabulary of characters, words or byte-level BPE tokens fitted on `text`.

    >>> fit_vocab("char", "abca").kind
    'char'
    """
    if kind == "char":
        return fit_tokenizer("char", text, lower=lower)
    if kind == "word":
        return fit_tokenizer("word", text, vocab_size, oov_buckets=oov_buckets, cleaner=TextCleaner(lower=lower))
    if kind == "bpe":
        if lower:
            raise ConfigError("--lower does not apply to --tokenizer bpe: byte-level BPE keeps the text as it is")
        return fit_tokenizer("bpe", text.splitlines(keepends=True), vocab_size)
    raise ConfigError(f"--tokenizer {kind!r}: choose one of {', '.join(TOKENIZERS)}")


def encode(vocab: Vocabulary, text: str) -> torch.Tensor:
    """Text → a LongTensor of token ids (T,) (a character vocabulary's is vectorised: corpora are megabytes)."""
    return vocab.encode_tensor(text)


def save_vocab(vocab: Vocabulary, directory: Path) -> None:
    """`vocab.json` (and a tokenizer's `tokenizer.json`) in a checkpoint directory; `load_tokenizer` reads any of them."""
    vocab.save_pretrained(directory)
