"""Padded batches for classification (the tokenizers' tests are in tests/tokenizers)."""

import pytest
import torch

from folio.data.text import ClassificationBatches, pad_sequences
from folio.errors import DataError


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


def test_batches_of_pairs_carry_their_segments():
    sequences = [[5, 6, 7, 8], [5, 6], [5, 6, 7], [5, 6, 7, 8, 9, 10]]
    segments = [[0, 0, 1, 1], [0, 1], [0, 1, 1], [0, 0, 0, 1, 1, 1]]
    batches = ClassificationBatches(sequences, [0, 1, 0, 1], batch_size=4, segments=segments)
    batch = batches.batch(0, 0)
    for row, m in zip(range(4), batch.mask, strict=True):
        index = sequences.index(batch.ids[row][m].tolist())
        assert batch.segments[row][m].tolist() == segments[index] and not batch.segments[row][~m].any()
    assert batch.to(torch.device("cpu")).segments is not None
    assert ClassificationBatches(sequences, [0, 1, 0, 1], batch_size=4).batch(0, 0).segments is None
