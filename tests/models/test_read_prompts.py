"""`read_prompts` (GPT, and Llama through it): prompts of different lengths read in one padded forward pass give
each prompt's logits read alone, and the state `merge_states` makes of their states read alone, from which
decoding goes on as from that one."""

from __future__ import annotations

import pytest
import torch

from folio.errors import ConfigError
from folio.models.gpt import GPT, GPTConfig

LENGTHS = (5, 1, 12, 7)


def _model(kind: str) -> torch.nn.Module:
    if kind == "llama":
        pytest.importorskip("tokenizers")
        from tests.helpers.llama import tiny_llama

        return tiny_llama()
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=30, layers=2, heads=2, hidden=32, context=24, dropout=0.0, positions=kind)).eval()


@pytest.mark.parametrize("kind", ["learned", "sinusoidal", "rope", "llama"])
def test_prompts_read_together_equal_prompts_read_alone_then_merged(kind):
    model = _model(kind)
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, model.config.vocab_size, (n,), generator=generator) for n in LENGTHS]
    with torch.inference_mode():
        logits, state = model.read_prompts(prompts)
        alone = [model(prompt[None], None, last_only=True) for prompt in prompts]
        merged = model.merge_states([s for _, s in alone])
        torch.testing.assert_close(logits, torch.cat([lg[:, -1] for lg, _ in alone]), atol=1e-5, rtol=1e-5)
        assert torch.equal(state.tokens, merged.tokens) and torch.equal(state.mask, merged.mask)
        for (keys, values), (merged_keys, merged_values) in zip(state.caches, merged.caches, strict=True):
            assert keys.isfinite().all() and values.isfinite().all()  # padding columns too: masked, but multiplied
            own = state.mask[:, None, :, None]  # (B, 1, S, 1)
            torch.testing.assert_close(keys * own, merged_keys * own, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(values * own, merged_values * own, atol=1e-5, rtol=1e-5)
        # greedy decoding goes on from either state alike
        tokens = merged_tokens = logits.argmax(-1, keepdim=True)
        for _ in range(6):
            step, state = model(tokens, state, last_only=True)
            merged_step, merged = model(merged_tokens, merged, last_only=True)
            torch.testing.assert_close(step, merged_step, atol=1e-5, rtol=1e-5)
            tokens, merged_tokens = step[:, -1].argmax(-1, keepdim=True), merged_step[:, -1].argmax(-1, keepdim=True)
            assert torch.equal(tokens, merged_tokens)


def test_prompts_longer_than_the_context_are_refused():
    model = _model("rope")  # context 24
    with pytest.raises(ConfigError, match="25 tokens is more than the model's context of 24"):
        model.read_prompts([torch.zeros(3, dtype=torch.long), torch.zeros(25, dtype=torch.long)])


def test_padding_queries_attend_to_themselves_so_every_weight_is_finite():
    # PyTorch's fused kernels (>= 2.5) give a query with no key zeros, the written-out softmax (the attention
    # weights' path, older versions) NaN, and a NaN value poisons the real rows that mask it out (0 · NaN)
    model = _model("rope")
    ids = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8]])
    own = torch.tensor([[False, False, True, True], [True, True, True, True]])
    with torch.inference_mode():
        logits, _, weights = model._run(ids, None, need_weights=True, mask=own)
        alone, _ = model(ids[:1, 2:])
    assert all(w.isfinite().all() for w in weights) and logits.isfinite().all()
    torch.testing.assert_close(logits[0, 2:], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(weights[0][0, :, 2:, :2], torch.zeros(2, 2, 2))  # a real query never sees the padding
