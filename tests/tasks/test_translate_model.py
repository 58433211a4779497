"""The recurrent encoder–decoder: state shapes, the two decoder paths, and learning a reversal task."""

import pytest
import torch

from folio.data.pairs import EOS, SOS, TranslationBatches, pad_batch
from folio.decoding.beam import beam_search, greedy_decode
from folio.errors import ConfigError
from folio.models.seq2seq import Seq2Seq, Seq2SeqConfig
from folio.training.config import TrainConfig
from folio.training.trainer import Trainer


def _config(**kw):
    base = dict(src_vocab_size=11, tgt_vocab_size=9, hidden=16, embedding_dim=8, dropout=0.0)
    return Seq2SeqConfig(**{**base, **kw})


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    sources = [torch.randint(4, 11, (n,), generator=g).tolist() + [EOS] for n in (5, 2, 7)]
    targets = [torch.randint(4, 9, (n,), generator=g).tolist() for n in (3, 6, 1)]
    return pad_batch(sources, targets)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_bidirectional_states_are_merged_to_decoder_shape(cell, layers):
    model = Seq2Seq(_config(cell=cell, layers=layers, bidirectional=True))
    batch = _batch()
    state = model.encode(batch.src, batch.src_lengths)
    assert state.memory.shape == (3, 8, 32)  # (B, S, 2H): both directions
    hidden = state.rnn if cell == "gru" else state.rnn[0]
    assert hidden.shape == (layers, 3, 16)  # (L, B, H): what the decoder expects
    if cell == "lstm":
        assert state.rnn[1].shape == (layers, 3, 16)
    # Padding does not reach the final states: a sentence alone gives the same state as in the batch.
    alone = model.encode(batch.src[1:2, :3], batch.src_lengths[1:2])
    alone_hidden = alone.rnn if cell == "gru" else alone.rnn[0]
    assert torch.allclose(alone_hidden[:, 0], hidden[:, 1], atol=1e-6)
    assert torch.allclose(alone.memory[0], state.memory[1, :3], atol=1e-6)
    assert (state.memory[1, 3:] == 0).all()


@pytest.mark.parametrize("attention", ["none", "luong_dot", "luong_general"])
def test_parallel_decoder_equals_step_by_step(attention):
    torch.manual_seed(0)
    kw = {"bidirectional": False} if attention == "luong_dot" else {}
    model = Seq2Seq(_config(attention=attention, input_feeding=False, **kw)).eval()
    assert model.parallel_decoder
    batch = _batch(1)
    fast, fast_w = model(batch.src, batch.src_lengths, batch.tgt_in)
    slow, slow_w = model(batch.src, batch.src_lengths, batch.tgt_in, step_by_step=True)
    assert torch.allclose(fast, slow, atol=1e-5)
    if attention != "none":
        assert torch.allclose(fast_w, slow_w, atol=1e-6)
        assert torch.allclose(fast_w.sum(-1), torch.ones_like(fast_w.sum(-1)))
        assert (fast_w[1, :, 3:] == 0).all()  # the second source has 3 tokens: no weight on its padding


def test_options_shared_embeddings_tied_output_and_errors():
    model = Seq2Seq(_config(tgt_vocab_size=11, share_embeddings=True, tie_output=True, embedding_dim=16))
    assert model.src_embedding is model.tgt_embedding and model.output.weight is model.tgt_embedding.weight
    assert model.loss(_batch()).item() > 0
    with pytest.raises(ConfigError, match="one vocabulary"):
        _config(share_embeddings=True)
    with pytest.raises(ConfigError, match="tie_output"):
        _config(tie_output=True)
    with pytest.raises(ConfigError, match="attention"):
        _config(attention="multihead")


def test_scheduled_sampling_feeds_predictions_in_training_only():
    torch.manual_seed(0)
    model = Seq2Seq(_config(attention="bahdanau"))
    batch = _batch(2)
    model.train()
    reference = model(batch.src, batch.src_lengths, batch.tgt_in)[0]
    model.sampling_probability = 1.0
    torch.manual_seed(0)
    sampled = model(batch.src, batch.src_lengths, batch.tgt_in)[0]
    assert not torch.allclose(reference, sampled)
    model.eval()
    assert torch.allclose(model(batch.src, batch.src_lengths, batch.tgt_in)[0], reference)


def _reverse_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    sources, targets = [], []
    for _ in range(n):
        length = int(torch.randint(3, 9, (1,), generator=g))
        seq = torch.randint(4, 12, (length,), generator=g).tolist()
        sources.append(seq + [EOS])
        targets.append(seq[::-1])
    return sources, targets


def _greedy_and_beam(model, sources, beam_size=3):
    """Greedy hypotheses and beam-search n-best lists for `sources`, allowing 5 tokens past each length."""
    model.eval()
    with torch.no_grad():
        batch = pad_batch(sources)
        state = model.encode(batch.src, batch.src_lengths)
        limits = batch.src_lengths + 5
        greedy = greedy_decode(model.decode_step, state, len(sources), SOS, EOS, limits)
        beams = beam_search(model.decode_step, model.reorder_state, model.expand_state(state, beam_size), len(sources),
                            SOS, EOS, beam_size, limits)
    return greedy, beams


@pytest.mark.slow
@pytest.mark.parametrize("attention,cell", [("bahdanau", "gru"), ("luong_general", "lstm")])
def test_reversal_is_learned_to_100_percent(tmp_path, attention, cell):
    torch.manual_seed(0)
    config = Seq2SeqConfig(src_vocab_size=12, tgt_vocab_size=12, hidden=64, embedding_dim=32, dropout=0.0,
                           attention=attention, cell=cell, input_feeding=True)
    model = Seq2Seq(config)
    sources, targets = _reverse_data(4000, 0)
    test_src, test_tgt = _reverse_data(200, 1)
    Trainer(model, TranslationBatches(sources, targets, 64), TrainConfig(lr=5e-3, max_steps=500, warmup_steps=20, eval_every=500,
                                                                  save_every=10_000),
            tmp_path, evaluate=lambda m: 0.0, saved_config={"task": "test"}, progress=False).train()
    greedy, beams = _greedy_and_beam(model, test_src)
    assert sum(h.tokens == t for h, t in zip(greedy, test_tgt, strict=False)) == len(test_tgt)
    assert sum(b[0].tokens == t for b, t in zip(beams, test_tgt, strict=False)) == len(test_tgt)
    # Reversal attends mostly to the mirrored source position.
    attention_map = greedy[0].attention
    n = len(test_tgt[0])
    assert (attention_map[:n].argmax(-1) == torch.arange(n - 1, -1, -1)).float().mean() >= 0.75


def test_source_reversal_feeds_tokens_backwards_before_eos():
    from folio.tasks.translate import SourceEncoder
    from folio.tokenizers import fit_tokenizer

    tok = fit_tokenizer("char", ["abc"], seq2seq=True)
    assert SourceEncoder(tok, reverse=False, max_len=10)("abc") == [4, 5, 6, EOS]
    assert SourceEncoder(tok, reverse=True, max_len=10)("abc") == [6, 5, 4, EOS]


def test_transformer_decode_steps_equal_the_parallel_decoder():
    from folio.models.transformer_seq2seq import TransformerSeq2Seq, TransformerSeq2SeqConfig

    torch.manual_seed(0)
    model = TransformerSeq2Seq(TransformerSeq2SeqConfig(src_vocab_size=11, tgt_vocab_size=9, layers=2, heads=2,
                                                        hidden=16, ff_dim=32, dropout=0.0)).eval()
    batch = _batch()
    with torch.no_grad():
        logits, weights = model(batch.src, batch.src_lengths, batch.tgt_in)
        state = model.encode(batch.src, batch.src_lengths)
        steps = []
        for t in range(batch.tgt_in.size(1)):
            step_logits, state, step_weights = model.decode_step(batch.tgt_in[:, t], state)
            steps.append(step_logits)
            torch.testing.assert_close(step_weights, weights[:, t], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(steps, 1), logits, atol=1e-5, rtol=1e-5)
    assert weights[1, :, 3:].abs().max() == 0  # sentence 1 has 3 source tokens: padding gets no attention
    assert model.loss(batch).item() > 0


@pytest.mark.slow
def test_transformer_learns_reversal_through_greedy_and_beam_search(tmp_path):
    from folio.models.transformer_seq2seq import TransformerSeq2Seq, TransformerSeq2SeqConfig

    torch.manual_seed(0)
    model = TransformerSeq2Seq(TransformerSeq2SeqConfig(src_vocab_size=12, tgt_vocab_size=12, layers=2, heads=4, hidden=64,
                                                        ff_dim=128, dropout=0.0, label_smoothing=0.0, max_src_len=12))
    sources, targets = _reverse_data(4000, 0)
    test_src, test_tgt = _reverse_data(200, 1)
    Trainer(model, TranslationBatches(sources, targets, 64),
            TrainConfig(lr=3e-3, max_steps=500, warmup_steps=50, schedule="inverse_sqrt", eval_every=500, save_every=10_000),
            tmp_path, evaluate=lambda m: 0.0, saved_config={"task": "test"}, progress=False).train()
    greedy, beams = _greedy_and_beam(model, test_src)
    assert sum(h.tokens == t for h, t in zip(greedy, test_tgt, strict=False)) >= 0.95 * len(test_tgt)
    assert sum(b[0].tokens == t for b, t in zip(beams, test_tgt, strict=False)) >= 0.95 * len(test_tgt)
