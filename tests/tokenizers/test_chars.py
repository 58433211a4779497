"""One token per character: a language model's table (ids = characters) and translation's (specials first)."""

import pytest
import torch

from folio.errors import VocabularyError
from folio.tokenizers import SEQ2SEQ_SPECIALS, CharTokenizer, load_tokenizer


def test_fit_encode_decode_roundtrip_and_json(tmp_path):
    text = "To be, or not to be: that is the question.\n"
    vocab = CharTokenizer.fit(text)
    ids = vocab.encode_tensor(text)
    assert ids.dtype == torch.long and vocab.decode(ids) == text
    assert vocab.symbols == sorted(set(text))
    assert vocab.encode(text) == ids.tolist() and vocab.tokenize(text) == (list(text), ids.tolist())
    vocab.save(tmp_path / "v.json")
    again = load_tokenizer(tmp_path / "v.json")
    assert again.symbols == vocab.symbols and torch.equal(again.encode_tensor(text), ids)


def test_lowercasing_as_in_the_book():
    vocab = CharTokenizer.fit("Hello World", lower=True)
    assert "H" not in vocab.symbols
    assert vocab.decode(vocab.encode_tensor("HELLO")) == "hello"


def test_unknown_characters_follow_the_declared_policy():
    vocab = CharTokenizer.fit("abc")
    with pytest.raises(VocabularyError, match="'z' at position 2"):
        vocab.encode_tensor("abzc")
    skipping = CharTokenizer.fit("abc", unknown="skip")
    assert skipping.decode(skipping.encode_tensor("abzcé")) == "abc"
    assert skipping.tokenize("abzc") == (["a", "b", "c"], [0, 1, 2])  # tokens stay aligned with ids
    with_specials = CharTokenizer.fit("abc", specials=SEQ2SEQ_SPECIALS)  # <unk> among the specials: unknown reads it
    assert with_specials.encode("abz") == [4, 5, with_specials.unk_id] and with_specials.tokenize("az")[0] == ["a", "z"]


def test_non_ascii_characters_encode():
    vocab = CharTokenizer.fit("naïve — café")
    assert vocab.decode(vocab.encode_tensor("café — naïve")) == "café — naïve"


def test_tensor_and_list_paths_agree():
    text = "ROMEO:\nHow are you? I am well.\n\n" * 1000
    vocab = CharTokenizer.fit(text[:40], unknown="skip")
    ids = vocab.encode_tensor(text + "é")  # the vectorised path the language model reads corpora with
    assert ids.dtype == torch.long and ids.tolist() == vocab.encode(text) == vocab.tokenize(text + "é")[1]
