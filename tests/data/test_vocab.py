import pytest
import torch

from folio.data.vocab import CharVocab
from folio.errors import VocabularyError


def test_fit_encode_decode_roundtrip_and_json(tmp_path):
    text = "To be, or not to be: that is the question.\n"
    vocab = CharVocab.fit(text)
    ids = vocab.encode(text)
    assert ids.dtype == torch.long and vocab.decode(ids) == text
    assert vocab.chars == sorted(set(text))
    vocab.save(tmp_path / "v.json")
    again = CharVocab.load(tmp_path / "v.json")
    assert again.chars == vocab.chars and torch.equal(again.encode(text), ids)


def test_lowercasing_as_in_the_book():
    vocab = CharVocab.fit("Hello World", lower=True)
    assert "H" not in vocab.chars
    assert vocab.decode(vocab.encode("HELLO")) == "hello"


def test_unknown_characters_follow_the_declared_policy():
    vocab = CharVocab.fit("abc")
    with pytest.raises(VocabularyError, match="'z' at position 2"):
        vocab.encode("abzc")
    skipping = CharVocab.fit("abc", unknown="skip")
    assert skipping.decode(skipping.encode("abzcé")) == "abc"


def test_non_ascii_characters_encode():
    vocab = CharVocab.fit("naïve — café")
    assert vocab.decode(vocab.encode("café — naïve")) == "café — naïve"
