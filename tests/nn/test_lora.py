"""LoRA adapters: the pretrained function at the start, only the adapters trained, a state dict that is the plain
model's (merged), merging for good, and loading a plain state back into an adapted model."""

import pytest
import torch
from torch import nn

from folio.errors import ConfigError
from folio.models.llama import Llama, LlamaConfig
from folio.nn.lora import LoRALinear, add_lora, merge_lora


def _llama(seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=40, layers=2, heads=4, kv_heads=2, hidden=16, ff_hidden=24, context=32)).eval()


def test_adapters_start_from_the_pretrained_function_and_train_alone():
    model, ids = _llama(), torch.randint(0, 40, (2, 12))
    with torch.no_grad():
        before = model(ids)[0]
    add_lora(model, rank=4, alpha=8)
    adapted = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(adapted) == 2 * 7  # q, k, v, out, gate, up, down in each block; not the embedding or the head
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], before)  # B = 0
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained and all(name.endswith(("lora_a", "lora_b")) for name in trained)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    frozen = model.blocks[0].self_attn.q_proj.base.weight.clone()
    for _ in range(3):
        optimizer.zero_grad()
        model(ids)[0].logsumexp(-1).mean().backward()
        optimizer.step()
    assert torch.equal(model.blocks[0].self_attn.q_proj.base.weight, frozen)
    with torch.no_grad():
        assert not torch.allclose(model.eval()(ids)[0], before)


def test_the_state_dict_is_the_plain_models_with_merged_weights_and_loads_back():
    model, ids = _llama(), torch.randint(0, 40, (1, 10))
    add_lora(model, rank=2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_b.normal_()  # a trained adapter
        adapted_logits = model(ids)[0]
    state = model.state_dict()
    plain = _llama(seed=1)
    assert state.keys() == plain.state_dict().keys()
    plain.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(plain(ids)[0], adapted_logits, atol=1e-5, rtol=1e-5)

    again = add_lora(_llama(seed=2), rank=2)  # resuming: the merged weights, the adapters from B = 0 again
    again.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(again(ids)[0], adapted_logits, atol=1e-5, rtol=1e-5)

    merged = merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert type(merged.blocks[1].ff.down) is nn.Linear
    with torch.no_grad():
        torch.testing.assert_close(merged(ids)[0], adapted_logits, atol=1e-5, rtol=1e-5)


def test_bad_lora_settings():
    with pytest.raises(ConfigError, match="rank"):
        LoRALinear(nn.Linear(4, 4), rank=0)
    with pytest.raises(ConfigError, match="no linear layer"):
        add_lora(nn.Sequential(nn.Linear(4, 4)), rank=2)
