import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from folio.data.windows import RandomWindows, StatefulStreams
from folio.errors import DataError


@settings(max_examples=40, deadline=None)
@given(length=st.integers(30, 400), seq_len=st.integers(1, 12), batch=st.integers(1, 6), seed=st.integers(0, 5))
def test_random_windows_cover_every_shift_once_per_epoch(length, seq_len, batch, seed):
    ids = torch.arange(length)
    data = RandomWindows(ids, seq_len, batch, seed=seed)
    starts = []
    for index in range(len(data)):
        b = data.batch(0, index)
        assert b.inputs.shape == (batch, seq_len) == b.targets.shape
        # targets are the inputs shifted by one, and each row is a contiguous window of the text
        assert torch.equal(b.targets[:, :-1], b.inputs[:, 1:])
        assert torch.equal(b.inputs, b.inputs[:, :1] + torch.arange(seq_len))
        starts += b.inputs[:, 0].tolist()
    assert len(set(starts)) == len(starts) == len(data) * batch  # no window twice in an epoch
    assert set(starts) <= set(range(length - seq_len))
    assert torch.equal(data.batch(0, 0).inputs, RandomWindows(ids, seq_len, batch, seed=seed).batch(0, 0).inputs)


def test_epochs_are_shuffled_differently():
    data = RandomWindows(torch.arange(1000), 10, 8, seed=1)
    assert not torch.equal(data.batch(0, 0).inputs, data.batch(1, 0).inputs)


@settings(max_examples=40, deadline=None)
@given(length=st.integers(50, 600), seq_len=st.integers(1, 10), batch=st.integers(1, 5))
def test_stateful_streams_continue_row_by_row(length, seq_len, batch):
    assume((length - 1) // batch >= seq_len)
    ids = torch.arange(length)
    data = StatefulStreams(ids, seq_len, batch)
    batches = [data.batch(0, i) for i in range(len(data))]
    assert batches[0].reset_state and not any(b.reset_state for b in batches[1:])
    rows = torch.cat([b.inputs for b in batches], dim=1)  # (B, len * seq_len)
    # every row is one contiguous stream, and the streams follow each other in the text
    assert torch.equal(rows, rows[:, :1] + torch.arange(rows.size(1)))
    stream_len = (length - 1) // batch
    assert torch.equal(rows[:, 0], torch.arange(batch) * stream_len)
    for b in batches:
        assert torch.equal(b.targets, b.inputs + 1)


def test_ranks_take_disjoint_rows_of_the_same_global_batch():
    ids = torch.arange(500)
    full = RandomWindows(ids, 5, 8, seed=3)
    halves = [RandomWindows(ids, 5, 4, seed=3, rank=r, world_size=2) for r in (0, 1)]
    both = torch.cat([h.batch(0, 2).inputs for h in halves])
    assert torch.equal(both, full.batch(0, 2).inputs)
    streams = [StatefulStreams(ids, 5, 2, rank=r, world_size=2) for r in (0, 1)]
    assert torch.equal(torch.cat([s.batch(0, 1).inputs for s in streams]), StatefulStreams(ids, 5, 4).batch(0, 1).inputs)


def test_too_short_text_is_refused():
    with pytest.raises(DataError, match="fewer than one window"):
        RandomWindows(torch.arange(5), 10, 2)
    with pytest.raises(DataError, match="too short"):
        StatefulStreams(torch.arange(20), 10, 4)
