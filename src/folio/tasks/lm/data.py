"""The vocabulary of a language model (characters, words with hashed OOV buckets, or byte-level BPE) and
the corpus as ids: tokenized once into the token cache (`folio.data.token_cache`) and memory-mapped."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from folio.data.corpora import open_corpus
from folio.data.token_cache import CorpusTokens, TokenizerFit, corpus_tokens, fit_corpus_tokens
from folio.errors import ConfigError, DataError
from folio.runtime import Distributed, main_process_first
from folio.tokenizers import TextCleaner, Tokenizer, fit_tokenizer

TOKENIZERS = ("char", "word", "bpe")
Vocabulary = Tokenizer


def vocab_fit(kind: str, vocab_size: int = 8000, oov_buckets: int = 1000, lower: bool = False) -> TokenizerFit:
    """How to fit a vocabulary of characters, words or byte-level BPE tokens on a corpus read in pieces.

    Characters read the whole corpus (the model must read any character of it); words and BPE the
    training split alone.

    >>> vocab_fit("char").fit(["abca"]).kind
    'char'
    """
    if kind == "char":
        return TokenizerFit({"kind": "char", "lower": lower}, lambda pieces: fit_tokenizer("char", pieces, lower=lower),
                            whole_text=True)
    if kind == "word":
        return TokenizerFit({"kind": "word", "vocab_size": vocab_size, "oov_buckets": oov_buckets, "lower": lower},
                            lambda pieces: fit_tokenizer("word", pieces, vocab_size, oov_buckets=oov_buckets,
                                                         cleaner=TextCleaner(lower=lower)))
    if kind == "bpe":
        if lower:
            raise ConfigError("--lower does not apply to --tokenizer bpe: byte-level BPE keeps the text as it is")
        return TokenizerFit({"kind": "bpe", "vocab_size": vocab_size},
                            lambda pieces: fit_tokenizer("bpe", _lines(pieces), vocab_size))
    raise ConfigError(f"--tokenizer {kind!r}: choose one of {', '.join(TOKENIZERS)}")


def _lines(pieces: Iterable[str]) -> Iterable[str]:
    for piece in pieces:
        yield from piece.splitlines(keepends=True)


def fit_vocab(kind: str, text: str, vocab_size: int = 8000, oov_buckets: int = 1000, lower: bool = False) -> Vocabulary:
    """A vocabulary fitted on one text (see `vocab_fit`).

    >>> fit_vocab("char", "abca").kind
    'char'
    """
    return vocab_fit(kind, vocab_size, oov_buckets, lower).fit([text])


def corpus_ids(corpus: str, split: tuple[float, float, float], vocab: Vocabulary | TokenizerFit,
               dist: Distributed = Distributed()) -> CorpusTokens:
    """`corpus` (a name or a file) as ids of `vocab`, or of a vocabulary fitted as `vocab` says, from the
    token cache. Under torchrun rank 0 builds the cache and the other processes then map it."""
    source = open_corpus(corpus)
    with main_process_first(dist):
        if isinstance(vocab, TokenizerFit):
            return fit_corpus_tokens(source, vocab, split)
        return corpus_tokens(source, vocab, split)


def train_valid_ids(tokens: CorpusTokens, corpus: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and validation splits' ids (memory-mapped), refusing a corpus too short to have both."""
    for name in ("train", "valid"):
        if tokens.chars[name] < 2 or len(tokens.split(name)) < 2:
            raise DataError(f"corpus {corpus!r} is too short: its {name} split has {tokens.chars[name]} "
                            f"characters, {len(tokens.split(name))} tokens")
    return tokens.split("train"), tokens.split("valid")


def encode(vocab: Vocabulary, text: str) -> torch.Tensor:
    """Text → a LongTensor of token ids (T,) (a character vocabulary's is vectorised: corpora are megabytes)."""
    return vocab.encode_tensor(text)


def save_vocab(vocab: Vocabulary, directory: Path) -> None:
    """`vocab.json` (and a tokenizer's `tokenizer.json`) in a checkpoint directory; `load_tokenizer` reads any of them."""
    vocab.save_pretrained(directory)


def spellings(vocab: Vocabulary) -> list[str]:
    """The text of every id, as a character-level token encoder reads it: a word's letters, a BPE token's
    decoded text; "" for ids with no text of their own (padding, hashed buckets, special tokens).

    >>> spellings(fit_vocab("word", "to be or not to be", oov_buckets=2))
    ['', 'be', 'to', 'not', 'or', '', '']
    """
    specials = set(vocab.specials)
    texts = []
    for index in range(len(vocab)):
        token = vocab.id_to_token(index)
        texts.append("" if token in specials or token == "<unk>" else token if vocab.kind in ("char", "word")
                     else vocab.decode([index]))
    return texts


def split_ids(corpus: str, config: dict, vocab: Vocabulary, split: str) -> tuple[torch.Tensor, int]:
    """The ids of one split of `corpus` ("all": the whole of it), split as the model in `config` (its config.json)
    was trained, and the characters they stand for: from the token cache (tokenized there once)."""
    tokens = corpus_ids(corpus, tuple(config.get("data", {}).get("split", [0.9, 0.05, 0.05])), vocab)
    if split == "all":
        return tokens.ids, sum(tokens.chars.values())
    return tokens.split(split), tokens.chars[split]
