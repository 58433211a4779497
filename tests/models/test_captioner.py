import pytest
import torch

from folio.errors import ConfigError
from folio.models.captioner import CaptionBatch, Captioner, CaptionerConfig


def tiny(**overrides) -> Captioner:
    torch.manual_seed(0)
    config = CaptionerConfig(vocab_size=12, image_size=32, channels=(8, 16), feature_dim=16, embedding_dim=8,
                             hidden=24, attention_dim=16, **overrides)
    return Captioner(config).eval()


def test_attention_over_the_grid_sums_to_one_at_every_step():
    model = tiny()
    tgt_in = torch.tensor([[1, 5, 6, 7], [1, 8, 0, 0]])
    logits, alphas = model(torch.rand(2, 3, 32, 32), tgt_in)
    assert logits.shape == (2, 4, 12)
    assert alphas.shape == (2, 4, 16 * 16)  # two stages: one 2×2 pool, a 16×16 grid
    assert torch.allclose(alphas.sum(-1), torch.ones(2, 4), atol=1e-5)
    assert (alphas >= 0).all()


def test_step_by_step_decoding_matches_the_teacher_forced_pass():
    model = tiny()
    images, tgt_in = torch.rand(2, 3, 32, 32), torch.tensor([[1, 5, 6], [1, 7, 8]])
    logits, alphas = model(images, tgt_in)
    state = model.encode(images)
    for t in range(3):
        step_logits, state, weights = model.decode_step(tgt_in[:, t], state)
        assert torch.allclose(step_logits, logits[:, t], atol=1e-5)
        assert torch.allclose(weights, alphas[:, t], atol=1e-6)


def test_doubly_stochastic_penalty_is_added_to_the_loss_only_when_asked():
    images = torch.rand(2, 3, 32, 32)
    batch = CaptionBatch(images, torch.tensor([[1, 5, 6], [1, 7, 0]]), torch.tensor([[5, 6, 2], [7, 2, 0]]))
    plain = tiny(doubly_stochastic=0.0).loss(batch)
    penalised = tiny(doubly_stochastic=1.0).loss(batch)
    _, alphas = tiny()(images, batch.tgt_in)
    keep = (batch.tgt_out != 0).float()[:, :, None]
    penalty = ((1 - (alphas * keep).sum(1)) ** 2).mean()
    assert penalised.item() == pytest.approx(plain.item() + penalty.item(), rel=1e-5)


def test_expand_and_reorder_keep_rows_aligned():
    model = tiny()
    state = model.expand_state(model.encode(torch.rand(2, 3, 32, 32)), 3)
    assert state.h.shape[0] == state.memory.shape[0] == 6
    assert torch.equal(state.memory[0], state.memory[2]) and not torch.equal(state.memory[0], state.memory[3])
    moved = model.reorder_state(state, torch.tensor([2, 2, 0, 5, 3, 4]))
    assert torch.equal(moved.h[0], state.h[2]) and torch.equal(moved.c[3], state.c[5])


def test_wrong_image_size_and_bad_config_are_clear_errors():
    with pytest.raises(ConfigError, match="built for 32×32"):
        tiny().encode(torch.rand(1, 3, 64, 64))
    with pytest.raises(ConfigError, match="multiple of"):
        CaptionerConfig(vocab_size=5, image_size=30, channels=(8, 8, 8))
    with pytest.raises(ConfigError, match="encoder"):
        CaptionerConfig(vocab_size=5, encoder="resnet")
