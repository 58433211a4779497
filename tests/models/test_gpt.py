"""GPT: the cache equals recomputation, the sliding window, causal attention weights, a learned copy task."""

from types import SimpleNamespace

import pytest
import torch

from folio.errors import ConfigError
from folio.models.gpt import GPT, GPTConfig


def _gpt(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, layers=2, heads=2, hidden=16, context=kw.pop("context", 12), **kw)).eval()


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope"])
def test_cached_generation_equals_uncached_token_for_token(positions):
    gpt = _gpt(positions=positions, context=64)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with torch.no_grad():
        ids, (logits, state) = prompt, gpt(prompt)
        for _ in range(20):  # greedy, one position per step through the cache
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
            logits, state = gpt(nxt, state)
        slow = prompt
        for _ in range(20):  # greedy, re-running the whole text each step
            slow = torch.cat([slow, gpt(slow)[0][:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(ids, slow)
    assert state.length == 23


def test_a_reserved_state_steps_without_growing_and_gives_the_same_logits():
    """`reserve` makes each cache's room for the whole text at once (no doubling, whose copy holds two buffers),
    up to the context; the steps through it give the logits of steps through a cache that doubles."""
    gpt = _gpt(positions="rope", context=200)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with torch.no_grad():
        logits, state = gpt(prompt)
        reserved = gpt.reserve(state, 3 + 90)
        buffers = [cache.buffers[0] for cache in reserved.caches]
        assert [b.size(2) for b in buffers] == [93, 93] and reserved.length == 3
        assert gpt.reserve(reserved, 50).caches[0] is reserved.caches[0]  # room enough already: the same cache
        assert gpt.reserve(state, 10_000).caches[0].buffers[0].size(2) == 200  # no more than the context
        doubling = state
        for _ in range(90):  # past 64 positions: the plain state's caches double once
            token = logits[:, -1].argmax(-1, keepdim=True)
            reserved_logits, reserved = gpt(token, reserved)
            logits, doubling = gpt(token, doubling)
            torch.testing.assert_close(reserved_logits, logits, rtol=1e-5, atol=1e-6)
    assert all(cache.buffers[0] is b for cache, b in zip(reserved.caches, buffers, strict=True))
    assert doubling.caches[0].buffers[0].size(2) == 128 and reserved.length == doubling.length == 93


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_the_window_slides_past_the_context(positions):
    gpt = _gpt(context=8, positions=positions)
    ids = torch.randint(0, 11, (2, 30))
    with torch.no_grad():
        logits, state = gpt(ids)
        assert logits.shape == (2, 30, 11) and state.length <= 8
        # each chunk after the first sees at least half the context: token 20 is predicted from 16..20
        window = gpt(ids[:, 16:21])[0][:, -1]
        torch.testing.assert_close(logits[:, 20], window, atol=1e-5, rtol=1e-5)
        for t in range(30, 45):  # generation keeps going after the cache fills
            logits, state = gpt(ids[:, t % 30 : t % 30 + 1], state)
            assert state.length <= 8
    with pytest.raises(ConfigError, match="longer than the context"):
        gpt.loss(SimpleNamespace(inputs=ids, targets=ids))


def test_attention_weights_are_causal_distributions():
    gpt = _gpt()
    weights = gpt.attention_weights(torch.randint(0, 11, (1, 10)))
    assert len(weights) == 2 and weights[0].shape == (1, 2, 10, 10)
    torch.testing.assert_close(weights[1].sum(-1), torch.ones(1, 2, 10))
    assert weights[0].triu(1).abs().max() == 0


@pytest.mark.parametrize("positions, bf16", [("learned", False), ("rope", True)])
def test_gpt_learns_a_copy_task(positions, bf16):
    """Random 6-symbol strings, a separator, then the same string: the second half is only predictable
    by attending back, so a low loss there means attention learned to copy. Also with rotary positions
    under bf16 autocast on the CPU (`--precision bf16`)."""
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=10, layers=2, heads=2, hidden=64, context=13, dropout=0.0, positions=positions))
    opt = torch.optim.AdamW(gpt.parameters(), lr=3e-3)

    def batch(n):
        body = torch.randint(1, 9, (n, 6))
        seq = torch.cat([body, torch.full((n, 1), 9), body], 1)  # (n, 13)
        return SimpleNamespace(inputs=seq[:, :-1], targets=seq[:, 1:])

    for _ in range(250):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = gpt.loss(batch(64))
        opt.zero_grad()
        loss.backward()
        opt.step()
    gpt.eval()
    test = batch(256)
    with torch.no_grad():
        logits, _ = gpt(test.inputs)
    copied = logits[:, 6:].argmax(-1) == test.targets[:, 6:]  # the positions after the separator
    assert copied.float().mean() > 0.95
