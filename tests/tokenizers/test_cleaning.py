"""The book's cleaning and the truncation of long texts."""

import pytest

from folio.errors import ConfigError
from folio.tokenizers import TextCleaner, truncate


def test_cleaning_follows_the_book():
    cleaner = TextCleaner(lower=False)
    assert cleaner.tokens("Great<br />film!<br/>10/10, isn't it?") == ["Great", "film", "isn't", "it"]
    assert TextCleaner().tokens("Don't STOP_now") == ["don't", "stop", "now"]
    assert TextCleaner(max_chars=9).tokens("abcd efgh ijkl") == ["abcd", "efgh"]
    assert TextCleaner(level="char", lower=False).tokens("BT PV E") == list("BTPVE")
    assert TextCleaner().tokens("Élan café") == ["élan", "café"]  # letters, not only ASCII ones
    with pytest.raises(ConfigError):
        TextCleaner(level="byte")


def test_truncation_keeps_the_head_or_the_head_and_the_tail():
    items = list(range(20))
    assert truncate(items, 8) == list(range(8))
    assert truncate(items, 8, "head_tail") == [0, 1, 14, 15, 16, 17, 18, 19]  # a quarter from the start
    assert truncate(items, 30, "head_tail") == items and truncate(items, None) == items
    with pytest.raises(ConfigError, match="--truncation"):
        truncate(items, 8, "middle")
