import pytest
import torch

from folio.data.windows import Batch
from folio.errors import ConfigError
from folio.models.rnn_lm import RNNLanguageModel, RNNLMConfig
from folio.training.trainer import _detach


@pytest.mark.parametrize("arch,embedding_dim", [("gru", 0), ("gru", 8), ("lstm", 0), ("lstm", 8)])
def test_step_by_step_equals_one_pass(arch, embedding_dim):
    torch.manual_seed(0)
    model = RNNLanguageModel(RNNLMConfig(11, arch, layers=2, hidden=16, embedding_dim=embedding_dim)).eval()
    ids = torch.randint(0, 11, (3, 9))
    with torch.no_grad():
        full, _ = model(ids)
        state, steps = None, []
        for t in range(9):
            logits, state = model(ids[:, t : t + 1], state)
            steps.append(logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_stateful_loss_returns_detachable_state():
    model = RNNLanguageModel(RNNLMConfig(5, hidden=8))
    ids = torch.randint(0, 5, (2, 7))
    loss, state = model.loss(Batch(ids[:, :-1], ids[:, 1:]))
    assert loss.ndim == 0 and state.shape == (2, 2, 8)
    assert not _detach(state).requires_grad  # what the trainer carries to the next batch


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="choose gru or lstm"):
        RNNLMConfig(5, arch="rnn")
    with pytest.raises(ConfigError, match="dropout"):
        RNNLMConfig(5, dropout=1.5)
