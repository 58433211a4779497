"""Next-sentence prediction's data: documents by split, sentences, and the `[CLS] A [SEP] B [SEP]` pairs
(IsNext half the time and then B is A's true continuation; otherwise B comes from another document)."""

import numpy as np
import pytest
import torch

from folio.data.sentence_pairs import (
    SentenceDocuments,
    SentencePairBatches,
    check_documents,
    held_out_pairs,
    sentences,
    split_documents,
    tokenize_documents,
    truncate_pair,
)
from folio.errors import DataError
from folio.tokenizers import PAD_ID, WordTokenizer

CLS, SEP = 100_001, 100_002  # past every token of `_documents`


def _documents(counts: list[int], words: int = 4) -> SentenceDocuments:
    """Documents of the given sentence counts whose every token says where it is: d * 1000 + s * 10 + w
    (document d, its sentence s, word w), so a pair can be read back."""
    ids, sentence_starts, document_starts = [], [0], [0]
    for d, count in enumerate(counts):
        for s in range(count):
            ids.extend(d * 1000 + s * 10 + w + 1 for w in range(words))
            sentence_starts.append(len(ids))
        document_starts.append(document_starts[-1] + count)
    return SentenceDocuments(np.array(ids), np.array(sentence_starts), np.array(document_starts))


def _where(token: int) -> tuple[int, int]:
    return token // 1000, token % 1000 // 10  # (document, sentence)


def _read(batch, row: int) -> tuple[list[int], list[int]]:
    """A and B of one row, checking [CLS] A [SEP] B [SEP], the segments and the padding on the way."""
    ids, segments = batch.ids[row].tolist(), batch.segments[row].tolist()
    length = int(batch.mask[row].sum())
    assert batch.mask[row, :length].all() and ids[length:] == [PAD_ID] * (len(ids) - length)
    assert ids[0] == CLS and ids[length - 1] == SEP and ids[1 : length - 1].count(SEP) == 1
    seam = ids.index(SEP)
    assert segments[: seam + 1] == [0] * (seam + 1) and segments[seam + 1 : length] == [1] * (length - seam - 1)
    return ids[1:seam], ids[seam + 1 : length - 1]


def test_documents_are_lines_or_paragraphs_and_never_straddle_two_splits():
    text = "".join(f"Doc {i} one. Doc {i} two.\n\n" for i in range(20))  # 20 documents of 24 characters (+2)
    splits = split_documents(text, "paragraphs", (0.5, 0.25, 0.25))
    assert [len(splits[name]) for name in ("train", "valid", "test")] == [10, 5, 5]
    assert splits["train"][0] == "Doc 0 one. Doc 0 two." and splits["valid"][0] == "Doc 10 one. Doc 10 two."
    # a document goes where its last character is: the one the 50% cut runs through is the valid split's
    cut = split_documents(text, "paragraphs", (0.52, 0.24, 0.24))
    assert len(cut["train"]) == 10 and cut["valid"][0].startswith("Doc 10")
    lines = split_documents("first review. Two.\n\n  \nsecond review!\n", "lines", (0.5, 0.0, 0.5))
    assert lines == {"train": ["first review. Two."], "valid": [], "test": ["second review!"]}  # blank lines dropped


def test_sentences_come_from_a_real_splitter():
    assert sentences("It was great.<br /><br />The end? Yes! I met Mr. Smith in the U.S. in 3.5 days.") == [
        "It was great.", "The end?", "Yes!", "I met Mr. Smith in the U.S. in 3.5 days."]  # <br />: a space
    assert sentences("no boundary anywhere in this run of words") == ["no boundary anywhere in this run of words"]


def test_documents_are_tokenized_sentence_by_sentence():
    tokenizer = WordTokenizer.fit(["one two three four"], oov_buckets=2)
    docs = tokenize_documents(["One two. Three!", "!!! Four.", "...", "Four four. ?"], tokenizer)
    # the punctuation-only sentences have no words: dropped, and so is the document left with none
    assert len(docs) == 3 and docs.sentence_counts.tolist() == [2, 1, 1]
    assert docs.span(0, 2) == tokenizer.encode("one two three")
    check_documents(docs, "corpus x")
    with pytest.raises(DataError, match="x: no document has two sentences"):
        check_documents(tokenize_documents(["One two.", "Three four."], tokenizer), "x")
    with pytest.raises(DataError, match="x: only one document"):
        check_documents(tokenize_documents(["One two. Three four."], tokenizer), "x")


def test_a_long_pair_keeps_its_seam():
    assert truncate_pair(list(range(10)), [20, 21, 22], 8) == ([5, 6, 7, 8, 9], [20, 21, 22])  # A loses its front
    assert truncate_pair([1, 2], list(range(20, 30)), 6) == ([1, 2], [20, 21, 22, 23])  # B loses its end
    assert truncate_pair([1, 2, 3], [4, 5, 6], 4) == ([2, 3], [4, 5])
    assert truncate_pair([1], [2], 4) == ([1], [2])


def test_pairs_are_a_true_continuation_half_the_time_and_another_document_otherwise():
    docs = _documents([2, 5, 3, 1, 8, 4, 2, 6] * 8)  # a one-sentence document gives B's, never A's
    batches = SentencePairBatches(docs, batch_size=8, max_tokens=29, cls_id=CLS, sep_id=SEP, seed=1)
    assert len(batches) == 56 // 8  # the 56 documents of two sentences or more start one pair each an epoch
    is_next, starts = [], []
    for index in range(len(batches)):
        batch = batches.batch(0, index)
        assert batch.ids.size(1) <= 32  # fits the context: 29 tokens + [CLS] + 2 [SEP]
        for row in range(len(batch)):
            a, b = _read(batch, row)
            a_places, b_places = [_where(t) for t in a], [_where(t) for t in b]
            doc = a_places[0][0]
            starts.append(doc)
            assert {d for d, _ in a_places} == {doc} and sorted(a_places) == a_places  # one document, in order
            if batch.is_next[row]:
                assert b_places[0] == (doc, a_places[-1][1] + 1)  # the sentence after A's last
                assert {d for d, _ in b_places} == {doc}
            else:
                assert b_places[0][0] != doc and len({d for d, _ in b_places}) == 1
            is_next.append(int(batch.is_next[row]))
    assert sorted(starts) == sorted(np.flatnonzero(docs.sentence_counts >= 2).tolist())  # each once
    assert 0.4 <= sum(is_next) / len(is_next) <= 0.6


def test_pairs_are_a_function_of_seed_epoch_and_index_and_held_out_pairs_are_fixed():
    docs = _documents([3, 4, 2, 5] * 10)

    def batches(seed):
        return SentencePairBatches(docs, batch_size=4, max_tokens=20, cls_id=CLS, sep_id=SEP, seed=seed)

    first, again = batches(0), batches(0)
    for epoch, index in ((0, 3), (2, 1)):
        one, two = first.batch(epoch, index), again.batch(epoch, index)
        assert torch.equal(one.ids, two.ids) and torch.equal(one.segments, two.segments)
        assert torch.equal(one.is_next, two.is_next)
    assert not torch.equal(first.batch(0, 0).ids, first.batch(1, 0).ids)  # a new draw every epoch
    assert not torch.equal(first.batch(0, 0).ids, batches(5).batch(0, 0).ids)
    shards = [SentencePairBatches(docs, 2, 20, CLS, SEP, seed=0, rank=r, world_size=2).batch(0, 3) for r in (0, 1)]
    assert sorted(shards[0].ids[:, 1].tolist() + shards[1].ids[:, 1].tolist()) == sorted(first.batch(0, 3).ids[:, 1].tolist())

    held = held_out_pairs(docs, 20, CLS, SEP)
    assert held.pairs == held_out_pairs(docs, 20, CLS, SEP).pairs and len(held) == 40
    assert [n for _, _, n in held.pairs] == [True, False] * 20  # exactly half each: 0.5 is chance
    assert [len(b) for b in held.batches(16)] == [16, 16, 8]
    assert len(held_out_pairs(docs, 20, CLS, SEP, limit=10)) == 10
