"""Words: a classifier's cleaned words with stable hashed OOV buckets, and translation's words and punctuation."""

import subprocess
import sys

import pytest

from folio.errors import ConfigError
from folio.tokenizers import (
    PAD_ID,
    TextCleaner,
    WordPieceTokenizer,
    WordPunctTokenizer,
    WordTokenizer,
    load_tokenizer,
    stable_bucket,
)


def test_vocabulary_reserves_padding_and_ranks_by_frequency():
    vocab = WordTokenizer.fit(["b a a c c c", "d"], vocab_size=2, oov_buckets=5)
    assert vocab.symbols == ["c", "a"]  # most frequent first
    assert vocab.encode("c a") == [1, 2]
    assert len(vocab) == 1 + 2 + 5
    for word in ("b", "d", "zebra", "🎬"):
        bucket = vocab.token_to_id(word)
        assert 3 <= bucket < len(vocab) and bucket != PAD_ID
    ties = WordTokenizer.fit(["y x"], vocab_size=1, oov_buckets=1)
    assert ties.symbols == ["x"]  # ties broken alphabetically: fitting is deterministic
    with pytest.raises(ConfigError):
        WordTokenizer(["a"], oov_buckets=0)


def test_buckets_are_the_same_in_another_process():
    words = ["unseenword", "zyzzyva", "café", "don't", "x" * 50]
    here = [stable_bucket(w, 1000) for w in words]
    code = f"from folio.tokenizers import stable_bucket; print([stable_bucket(w, 1000) for w in {words!r}])"
    outputs = set()
    for seed in ("1", "2"):  # different hash salts: Python's hash() would differ between these
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONHASHSEED": seed},
                                check=True)
        outputs.add(result.stdout.strip())
    assert outputs == {str(here)}


def test_vocabulary_round_trips_through_a_directory(tmp_path):
    cleaner = TextCleaner(max_chars=100, lower=False)
    vocab = WordTokenizer.fit(["Good good movie"], vocab_size=10, oov_buckets=7, cleaner=cleaner)
    vocab.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.symbols == vocab.symbols and loaded.oov_buckets == 7 and loaded.cleaner == cleaner
    assert loaded.encode("Good movie, unseen!") == vocab.encode("Good movie, unseen!")


def test_decoding_words_and_subwords():
    vocab = WordTokenizer.fit(["good good bad"], vocab_size=10, oov_buckets=4)
    assert vocab.decode(vocab.encode("Good, bad and unseen!")) == "good bad <unk> <unk>"
    assert vocab.decode([0, 1, 0]) == "good"  # padding reads as nothing
    sub = WordPieceTokenizer.fit(["playing played player plays"] * 20, vocab_size=60)
    assert sub.decode(sub.encode("playing plays")) == "playing plays"


def test_words_and_punctuation_decode_exactly():
    tok = WordPunctTokenizer.fit(["Hello, world!", "a b"])
    assert tok.tokenize("a b")[0] == ["\u2581a", "\u2581b"]
    assert tok.tokenize("Hello, world!")[0] == ["\u2581Hello", ",", "\u2581world", "!"]
    assert tok.decode(tok.encode("Hello, world!")) == "Hello, world!"
    assert tok.encode("Hello, moon!")[2] == tok.unk_id and tok.decode(tok.encode("Hello, moon!")) == "Hello,!"
    assert [tok.id_to_token(i) for i in tok.encode("a b")] == ["\u2581a", "\u2581b"]
