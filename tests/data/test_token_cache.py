"""The token cache: a corpus tokenized once, in pieces, into a memory-mapped array whose splits are
exactly what tokenizing `split_text`'s splits whole gives; rebuilt when the text or the tokenizer changes."""

import os

import numpy as np
import pytest
import torch

from folio.data import token_cache
from folio.data.corpora import iter_text_file, open_corpus, read_text_file, split_text
from folio.data.token_cache import corpus_tokens, fit_corpus_tokens, ids_dtype
from folio.data.windows import IndexPermutation, RandomWindows
from folio.errors import DataError
from folio.tasks.lm.data import vocab_fit
from tests.helpers import PATTERN

# Lines of varied length, non-ASCII letters (some of 4 bytes in UTF-8), a final sigma that lower-casing
# reads in context, and a `<br />` that the word cleaner reads as a break.
TEXT = "".join(
    f"Ὀδυσσεύς {i} said: {'ab' * (i % 7)} naïve café 𝄞 ΣΟΦΟΣ<br />{PATTERN[i % 40:(i % 40) + 20]}\n"
    for i in range(600)
)


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of ~1,000 characters, so every split is read in many pieces and cut many times."""
    monkeypatch.setattr(token_cache, "PIECE_CHARS", 1000)


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_splits_hold_exactly_the_ids_of_the_whole_split(kind, corpus_file, tmp_path, small_pieces):
    fit = vocab_fit(kind, vocab_size=300, oov_buckets=10, lower=kind != "bpe")
    tokens = fit_corpus_tokens(open_corpus(str(corpus_file)), fit, cache=tmp_path / "cache")
    splits = split_text(TEXT)
    expected_vocab = fit.fit([TEXT if kind == "char" else splits["train"]])
    assert tokens.tokenizer.to_dict() == expected_vocab.to_dict()  # fitted in pieces as on the whole text
    for name in ("train", "valid", "test"):
        assert torch.equal(tokens.split(name).long(), expected_vocab.encode_tensor(splits[name]).long()), name
        assert tokens.chars[name] == len(splits[name])
    assert tokens.ids.numpy().dtype == ids_dtype(len(tokens.tokenizer))
    assert tokens.ids.dtype == (torch.uint16 if kind == "bpe" else torch.uint8)  # 300 BPE tokens; few words


def test_second_use_reads_the_cache_and_a_changed_source_is_tokenized_again(corpus_file, tmp_path):
    fit = vocab_fit("char")
    cache = tmp_path / "cache"
    first = fit_corpus_tokens(open_corpus(str(corpus_file)), fit, cache=cache)
    again = fit_corpus_tokens(open_corpus(str(corpus_file)), fit, cache=cache)
    assert first.built_seconds is not None and again.built_seconds is None
    assert torch.equal(first.ids, again.ids)
    corpus_file.write_text(TEXT + "Zebra!\n", encoding="utf-8")
    os.utime(corpus_file, ns=(1, 1))  # a new version, whatever the clock's resolution
    changed = fit_corpus_tokens(open_corpus(str(corpus_file)), fit, cache=cache)
    assert changed.built_seconds is not None and "Z" in changed.tokenizer.to_dict()["chars"]
    assert sum(changed.chars.values()) == len(TEXT) + 7
    assert len(list(cache.glob("*.bin"))) == 1  # what was made from the old version is gone


def test_another_tokenizer_has_its_own_cache_and_nothing_half_written_stays(corpus_file, tmp_path):
    cache = tmp_path / "cache"
    corpus = open_corpus(str(corpus_file))
    chars = fit_corpus_tokens(corpus, vocab_fit("char"), cache=cache)
    lowered = fit_corpus_tokens(corpus, vocab_fit("char", lower=True), cache=cache)
    assert chars.path != lowered.path and len(lowered.tokenizer) < len(chars.tokenizer)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary file left
    reused = corpus_tokens(corpus, lowered.tokenizer, cache=cache)  # a known tokenizer (a resumed run's)
    assert reused.built_seconds is None and reused.path == lowered.path


def test_a_damaged_cache_is_rebuilt(corpus_file, tmp_path):
    cache = tmp_path / "cache"
    tokens = fit_corpus_tokens(open_corpus(str(corpus_file)), vocab_fit("char"), cache=cache)
    expected = tokens.ids.clone()
    with open(tokens.path, "r+b") as handle:
        handle.truncate(10)  # as a copy cut short would be
    rebuilt = corpus_tokens(open_corpus(str(corpus_file)), tokens.tokenizer, cache=cache)
    assert rebuilt.built_seconds is not None and torch.equal(rebuilt.ids, expected)


def test_embedded_corpus_is_cached_by_content(tmp_path):
    tokens = fit_corpus_tokens(open_corpus("shakespeare"), vocab_fit("char"), cache=tmp_path)
    assert tokens.ids.dtype == torch.uint8 and tokens.chars["train"] > 4_000_000
    assert tokens.split("valid")[:200].long().tolist() == tokens.tokenizer.encode(split_text(read_text_or_embedded())["valid"][:200])


def read_text_or_embedded() -> str:
    from folio.data.corpora import load_corpus

    return load_corpus("shakespeare")


def test_file_is_read_in_pieces_that_join_to_the_text(corpus_file):
    pieces = list(iter_text_file(corpus_file, block_bytes=7))  # cuts inside 2- and 4-byte characters
    assert len(pieces) > 100 and "".join(pieces) == read_text_file(corpus_file)


def test_non_utf8_byte_is_reported_with_its_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(("ok line\n" * 5000).encode() + b"caf\xe9\n")
    with pytest.raises(DataError, match=r"bad.txt is not UTF-8 \(line 5001"):
        for _ in iter_text_file(path, block_bytes=1000):
            pass


def test_dtype_is_the_smallest_that_holds_the_vocabulary():
    assert [ids_dtype(n) for n in (65, 256, 257, 65536, 65537)] == [np.uint8, np.uint8, np.uint16, np.uint16, np.uint32]


@pytest.mark.parametrize("n", [1, 2, 10, 1000, 12345])
def test_index_permutation_is_a_permutation_and_depends_on_the_key(n):
    order = IndexPermutation(n, key=7)(torch.arange(n))
    assert sorted(order.tolist()) == list(range(n))
    assert torch.equal(order, IndexPermutation(n, key=7)(torch.arange(n)))
    if n >= 1000:
        assert not torch.equal(order, IndexPermutation(n, key=8)(torch.arange(n)))
        assert (order != torch.arange(n)).float().mean() > 0.9


def test_windows_over_a_large_corpus_use_the_computed_permutation(monkeypatch):
    ids = torch.arange(5000, dtype=torch.int32)  # each id its position: a window's first id is its start
    exact = RandomWindows(ids, seq_len=8, batch_size=16, seed=1).batch(0, 0)  # torch.randperm's order
    monkeypatch.setattr(RandomWindows, "exact_shuffle_limit", 100)
    large = RandomWindows(ids, seq_len=8, batch_size=16, seed=1)
    starts = torch.cat([large.batch(0, i).inputs[:, 0] for i in range(len(large))])
    batch = large.batch(0, 3)
    assert batch.inputs.dtype == torch.int64 and torch.equal(batch.targets[:, :-1], batch.inputs[:, 1:])
    assert len(set(starts.tolist())) == len(starts)  # no window twice in an epoch
    assert not torch.equal(exact.inputs, large.batch(0, 0).inputs)


@pytest.mark.slow  # loads SmolLM2 (its tokenizer comes with the weights)
def test_a_pretrained_tokenizer_reads_the_corpus_in_pieces_as_whole(tmp_path, small_pieces):
    pytest.importorskip("gguf")
    from folio.models.llama_weights import load_pretrained

    _, tokenizer = load_pretrained("smollm2")
    # blank lines, indented lines and runs of spaces: where whitespace merges into one token
    text = "".join(f"Line {i}:\n\n   indented {i}  \n\t\n{'x' * (i % 5)}  \n" for i in range(400)) + TEXT[:5000]
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    tokens = corpus_tokens(open_corpus(str(path)), tokenizer, cache=tmp_path / "cache")
    for name, part in split_text(text).items():
        assert tokens.split(name).long().tolist() == tokenizer.encode(part), name
