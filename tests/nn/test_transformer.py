"""Transformer layers: the positional table against its formula, SDPA against the written-out path,
masks (causal, key padding), the key/value cache, pre-LN and post-LN blocks."""

import math

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from folio.errors import ConfigError
from folio.nn.feedforward import SwiGLU
from folio.nn.kv_cache import KVCache
from folio.nn.masks import causal_mask, lengths_to_mask
from folio.nn.multihead_attention import MultiHeadAttention, reference_attention, scaled_dot_product_attention
from folio.nn.norms import RMSNorm
from folio.nn.positions import PositionalEncoding, RotaryEmbedding, sinusoidal_positions
from folio.nn.transformer import TransformerBlock, decode_blocks, fuse_projections


@pytest.mark.parametrize("dim", [8, 7, 1])
def test_sinusoidal_table_matches_the_formula(dim):
    table = sinusoidal_positions(50, dim)
    assert table.shape == (50, dim)
    for p in (0, 1, 17, 49):
        for j in range(dim):
            i = j // 2
            angle = p / 10000 ** (2 * i / dim)
            expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert table[p, j].item() == pytest.approx(expected, abs=1e-6)


def test_positional_encoding_offset_and_limit():
    pe = PositionalEncoding(6, max_len=10)
    x = torch.zeros(1, 4, 6)
    torch.testing.assert_close(pe(x, offset=3)[0], sinusoidal_positions(10, 6)[3:7])
    with pytest.raises(ConfigError, match="beyond the model's 10 positions"):
        pe(torch.zeros(1, 4, 6), offset=7)
    learned = PositionalEncoding(6, max_len=10, learned=True)
    assert sum(p.numel() for p in learned.parameters()) == 60


def test_rotary_scores_depend_on_the_distance_alone():
    rope = RotaryEmbedding(head_dim=8, max_len=40)
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    score = lambda i, j: (rope(q, i) * rope(k, j)).sum().item()  # noqa: E731  query at i, key at j
    assert score(7, 3) == pytest.approx(score(30, 26), abs=1e-5)  # both 4 apart
    assert score(7, 3) != pytest.approx(score(7, 5), abs=1e-3)
    assert score(0, 0) == pytest.approx((q * k).sum().item(), abs=1e-6)  # position 0 is not rotated
    torch.testing.assert_close(rope(q, 11).norm(), q.norm())  # a rotation keeps lengths
    with pytest.raises(ConfigError, match="beyond the model's 40 positions"):
        rope(torch.zeros(1, 1, 2, 8), offset=39)
    with pytest.raises(ConfigError, match="even head size"):
        RotaryEmbedding(head_dim=7, max_len=4)


def test_bf16_cpu_training_takes_the_unfused_kernel_with_the_same_result():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 16, 8, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    out, _ = scaled_dot_product_attention(q, k, v, causal=True)
    ref, _ = reference_attention(q.float(), k.float(), v.float(), causal_mask(16, q.device))
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    out.float().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad.float()).all()


def test_sdpa_matches_the_reference_path_with_masks():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    padding = lengths_to_mask(torch.tensor([5, 2, 4]), 5)[:, None, None, :]  # (B, 1, 1, S)
    for mask, causal in [(None, False), (padding, False), (None, True), (padding, True)]:
        fast, none = scaled_dot_product_attention(q, k, v, mask, causal)
        slow, weights = scaled_dot_product_attention(q, k, v, mask, causal, need_weights=True)
        assert none is None
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 5))
    _, weights = scaled_dot_product_attention(q, k, v, padding, True, need_weights=True)
    assert weights[1, :, :, 2:].abs().max() == 0  # padding keys get no weight
    assert weights[0].triu(1).abs().max() == 0  # no query sees a later key
    out, ref_weights = reference_attention(q, k, v, causal_mask(5))
    torch.testing.assert_close(ref_weights, scaled_dot_product_attention(q, k, v, causal=True, need_weights=True)[1])


def test_causal_self_attention_ignores_the_future():
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, 32).eval()
    x = torch.randn(2, 8, 16)
    changed = x.clone()
    changed[:, 5:] = torch.randn(2, 3, 16)
    a, _ = block(x, causal=True)
    b, _ = block(changed, causal=True)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("norm_first", [True, False])
def test_cached_steps_equal_the_full_pass(norm_first):
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, 32, norm_first=norm_first).eval()
    x = torch.randn(2, 7, 16)
    full, _ = block(x, causal=True)
    out, extras = block(x[:, :3], causal=True)
    steps = [out]
    for t in range(3, 7):
        out, extras = block(x[:, t : t + 1], causal=True, cache={"self": extras["self"]})
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_cross_attention_respects_the_memory_mask_and_caches_the_memory():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).eval()
    x, memory = torch.randn(2, 3, 8), torch.randn(2, 6, 8)
    mask = lengths_to_mask(torch.tensor([6, 3]), 6)[:, None, None, :]
    out, weights, cache = mha(x, memory, mask=mask, need_weights=True)
    assert weights.shape == (2, 2, 3, 6) and weights[1, :, :, 3:].abs().max() == 0
    garbage = memory.clone()
    garbage[1, 3:] = 100.0  # what sits in the padding changes nothing
    torch.testing.assert_close(mha(x, garbage, mask=mask)[0][1], out[1])
    again, _, _ = mha(x, torch.zeros_like(memory), mask=mask, cache=cache)  # the cache stands for the memory
    torch.testing.assert_close(again, out)


def test_heads_must_divide_the_width():
    with pytest.raises(ConfigError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ConfigError, match="multiple of the key/value heads"):
        MultiHeadAttention(12, 6, kv_heads=4)


def test_grouped_query_attention_is_multi_head_attention_with_shared_keys_and_values():
    """kv_heads=2 of 6 heads: the same as 6 full heads whose key/value weights repeat each group's; the cache
    keeps only the 2 key/value heads, and caching step by step changes nothing."""
    torch.manual_seed(0)
    rotary = RotaryEmbedding(4, 16, base=500.0)
    grouped = MultiHeadAttention(24, 6, bias=False, kv_heads=2, rotary=rotary).eval()
    full = MultiHeadAttention(24, 6, bias=False, rotary=rotary).eval()
    with torch.no_grad():
        for name in ("q_proj", "out_proj"):
            getattr(full, name).weight.copy_(getattr(grouped, name).weight)
        for name in ("k_proj", "v_proj"):  # (2 heads · 4, 24) → each head's rows three times: (6 · 4, 24)
            getattr(full, name).weight.copy_(getattr(grouped, name).weight.view(2, 4, 24).repeat_interleave(3, 0).reshape(24, 24))
    x = torch.randn(2, 7, 24)
    out, _, (keys, values) = grouped(x, causal=True)
    torch.testing.assert_close(out, full(x, causal=True)[0], atol=1e-6, rtol=1e-5)
    assert keys.shape == values.shape == (2, 2, 7, 4)
    first, _, cache = grouped(x[:, :4], causal=True)
    last, _, _ = grouped(x[:, 4:], causal=True, cache=cache)
    torch.testing.assert_close(torch.cat([first, last], 1), out, atol=1e-6, rtol=1e-5)


def test_rms_norm_and_swiglu_blocks():
    x = torch.randn(2, 3, 8) * 5
    norm = RMSNorm(8, eps=1e-6)
    torch.testing.assert_close(norm(x), x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt())
    assert norm.bfloat16()(x.bfloat16()).dtype == torch.bfloat16  # computed in float32 inside
    block = TransformerBlock(8, 2, 16, norm="rms", activation="swiglu", bias=False, kv_heads=1, rotary_len=8)
    assert isinstance(block.norm1, RMSNorm) and isinstance(block.ff, SwiGLU)
    assert all(m.bias is None for m in block.modules() if isinstance(m, torch.nn.Linear))
    assert block(x, causal=True)[0].shape == (2, 3, 8)
    with pytest.raises(ConfigError, match="choose layer or rms"):
        TransformerBlock(8, 2, 16, norm="batch")


def test_a_growing_cache_appends_in_place_doubles_when_full_and_rewinds():
    keys, values = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    cache = KVCache.growing((keys, values), room=1, limit=100)
    assert cache._keys.size(2) == 64 and cache.length == 5 and len(cache) == 2
    new = [torch.randn(2, 3, 1, 4) for _ in range(70)]  # past the first 64 positions: a larger buffer
    grown = cache
    for step in new:
        grown = grown.extend(step, step * 2)
    k, v = grown
    assert k.shape == (2, 3, 75, 4) and grown._keys.size(2) == 100  # doubling stops at the limit
    torch.testing.assert_close(k, torch.cat([keys, *new], 2), rtol=0, atol=0)
    torch.testing.assert_close(v, torch.cat([values, *(2 * t for t in new)], 2), rtol=0, atol=0)
    assert torch.equal(cache.keys, keys)  # the views handed out earlier keep their positions
    rewound = grown.truncate(7)
    assert rewound.keys.shape[2] == 7 and torch.equal(rewound[1], v[:, :, :7])


@pytest.mark.parametrize("bias", [True, False])
def test_fused_projections_give_the_same_outputs_keep_names_and_train_the_same_parameters(bias, tmp_path):
    """One product for q/k/v and for gate/up: the outputs and the cache of the plain layers, the parameters still
    under their names (views of the fused matrices, so loading new weights reaches the fused ones), gradients
    still on the plain path, and a state dict safetensors writes."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    rotary = RotaryEmbedding(4, 32, base=500.0)
    block = TransformerBlock(24, 6, 40, norm="rms", activation="swiglu", bias=bias, kv_heads=2, rotary=rotary).eval()
    x = torch.randn(2, 9, 24)
    with torch.no_grad():
        plain, extras = block(x, causal=True)
        step, _ = block(x[:, -1:], causal=True, cache={"self": KVCache.growing(block(x[:, :-1], causal=True)[1]["self"])})
    fuse_projections(block)
    attention = block.self_attn
    assert attention.q_proj.weight.data_ptr() == attention.qkv_weight.data_ptr()
    with torch.no_grad():
        fused, fused_extras = block(x, causal=True)
        cache = KVCache.growing(block(x[:, :-1], causal=True)[1]["self"])
        fused_step, _ = block(x[:, -1:], causal=True, cache={"self": cache})
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fused_extras["self"][0], extras["self"][0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fused_step, step, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fused_step[:, 0], plain[:, -1], atol=1e-5, rtol=1e-5)

    state = block.state_dict()
    assert {"self_attn.q_proj.weight", "ff.gate.weight", "ff.up.weight"} <= state.keys()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "block.safetensors"))
    assert torch.equal(load_file(str(tmp_path / "block.safetensors"))["ff.up.weight"], block.ff.up.weight)
    with torch.no_grad():
        block.ff.up.weight.zero_()  # the fused matrix is the parameters' memory
    assert block.ff.gate_up_weight[40:].abs().sum() == 0

    block.train()
    block(x, causal=True)[0].sum().backward()
    assert attention.k_proj.weight.grad is not None and block.ff.gate.weight.grad is not None


@pytest.mark.parametrize("kv_heads", [3, 9])
def test_one_query_bf16_attention_matches_the_fused_kernel(kv_heads):
    """A decoding step's attention in bf16 (two float32 products) against PyTorch's kernel on the same inputs, keys
    read through a cache's view of a larger buffer, grouped and plain heads."""
    from folio.nn.multihead_attention import scaled_dot_product_attention

    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 9, 1, 64, generator=generator).bfloat16()
    k, v = (torch.randn(2, kv_heads, 80, 64, generator=generator).bfloat16()[:, :, :70] for _ in range(2))
    out, _ = scaled_dot_product_attention(q, k, v, causal=True)
    group = 9 // kv_heads
    expected = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(group, 1),
                                              v.float().repeat_interleave(group, 1))
    assert out.shape == (2, 9, 1, 64) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize(("batch", "heads", "kv_heads", "keys", "dim"),
                         [(8, 9, 3, 123, 64), (1, 9, 3, 7, 64), (3, 4, 4, 17, 16), (2, 8, 2, 1, 32), (2, 4, 1, 40, 128),
                          (1, 2, 1, 300, 40)])
def test_one_query_float32_attention_by_folios_kernel_matches_pytorchs(batch, heads, kv_heads, keys, dim):
    """A float32 decoding step's attention by Folio's kernel (decode_step.c) against PyTorch's fused kernel on
    the same inputs: the query a slice of a larger projection, keys and values views of a cache's larger buffers,
    grouped and plain heads, sizes that are and are not multiples of the kernel's eight lanes, with and without a
    key mask (a batch whose rows sit at different positions); scores far apart, so that the softmax's
    exponentials span their range. A row whose keys are all masked gives zeros (there is nothing to read)."""
    from folio.nn import kernels
    from folio.nn.multihead_attention import _one_query_kernel, scaled_dot_product_attention

    if not kernels.available()[0]:
        pytest.skip(f"Folio's kernels do not run here: {kernels.available()[1]}")
    generator = torch.Generator().manual_seed(keys)
    q = torch.randn(batch, heads + kv_heads, 1, dim, generator=generator)[:, :heads] * 2
    k, v = (torch.randn(batch, kv_heads, keys + 9, dim, generator=generator)[:, :, :keys] * 2 for _ in range(2))
    mask = torch.rand(batch, 1, 1, keys, generator=generator) > 0.4
    mask[..., -1] = True  # a step's own key
    for key_mask in (None, mask):
        out, none = scaled_dot_product_attention(q, k, v, key_mask, causal=True)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, enable_gqa=True)
        assert none is None and out.shape == (batch, heads, 1, dim)
        torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(_one_query_kernel(q, k, v, key_mask), expected, atol=2e-5, rtol=1e-4)
    mask[0] = False
    out = _one_query_kernel(q, k, v, mask)
    assert out[0].abs().sum() == 0 and torch.isfinite(out).all()
    torch.testing.assert_close(out[1:], F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)[1:],
                               atol=2e-5, rtol=1e-4)


def test_one_query_attention_takes_pytorchs_kernel_for_what_folios_does_not_take():
    """Shapes the kernel does not read (a head size off its lanes, a mask that is not a key mask, float64) go to
    PyTorch's kernel: the same answers."""
    from folio.nn.multihead_attention import _one_query_kernel, scaled_dot_product_attention

    q, k, v = torch.randn(2, 4, 1, 12), torch.randn(2, 2, 5, 12), torch.randn(2, 2, 5, 12)
    assert _one_query_kernel(q, k, v, None) is None
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v)[0],
                               F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
    q, k, v = torch.randn(2, 4, 1, 16), torch.randn(2, 4, 5, 16), torch.randn(2, 4, 5, 16)
    per_head = torch.rand(2, 4, 1, 5) > 0.3
    per_head[..., 0] = True
    assert _one_query_kernel(q, k, v, per_head) is None
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, per_head)[0],
                               F.scaled_dot_product_attention(q, k, v, attn_mask=per_head))
    assert _one_query_kernel(q.double(), k.double(), v.double(), None) is None


def _kernel_calls(monkeypatch, function: str, pick) -> list:
    """What `pick(args)` gives for each call of the kernels' `function` from now on (the library object's attribute,
    as the layers read it); stays empty where there are no kernels."""
    from folio.nn import kernels

    calls, library = [], kernels.load()
    if library is not None:
        kernel = getattr(library, function)
        monkeypatch.setattr(library, function, lambda *args: calls.append(pick(args)) or kernel(*args))
    return calls


def test_rms_norm_by_folios_kernel_matches_pytorchs_and_gradients_still_flow(monkeypatch):
    """Without gradients, float32 RMSNorm runs Folio's kernel (decode_step.c): PyTorch's numbers for one row, a
    batch of decoding rows, a prompt (rows shared among threads) and a non-contiguous input; widths that are not
    a multiple of its eight lanes go to PyTorch. With gradients, PyTorch's, and the gradient reaches the weight."""
    from folio.nn import kernels

    calls = _kernel_calls(monkeypatch, "folio_rms_norm", lambda args: args[1])
    generator = torch.Generator().manual_seed(0)
    for width, shape in [(576, (1, 1)), (576, (8, 1)), (64, (3, 200)), (24, (2, 5)), (12, (2, 5))]:
        norm = RMSNorm(width, eps=1e-5)
        norm.weight.data = torch.randn(width, generator=generator)
        x = torch.randn(*shape, width, generator=generator) * 4
        expected = F.rms_norm(x, (width,), norm.weight.detach(), 1e-5)
        with torch.no_grad():
            torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)
            strided = torch.randn(*shape, 2 * width, generator=generator)[..., :width]
            torch.testing.assert_close(norm(strided), F.rms_norm(strided, (width,), norm.weight, 1e-5),
                                       atol=1e-5, rtol=1e-5)
        norm(x).sum().backward()
        assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0
    if kernels.load() is not None:  # the rows of each no-gradient call of a width of whole lanes, twice each
        assert calls == [1, 1, 8, 8, 600, 600, 10, 10]


def test_fused_swiglu_by_folios_kernel_matches_pytorchs(monkeypatch):
    """Without gradients, a fused float32 SwiGLU computes silu(gate)·up with Folio's kernel (decode_step.c): the
    numbers of the unfused layer, for a decoding row, a batch, a prompt, and gates from -100 to 100 (its e^-|g|
    never overflows); with gradients, PyTorch's ops, and the gradient reaches the inputs."""
    from folio.nn import kernels

    calls = _kernel_calls(monkeypatch, "folio_swiglu", lambda args: args[1])
    torch.manual_seed(0)
    for dim, ff, shape in [(16, 32, (1, 1)), (16, 48, (8, 1)), (24, 64, (3, 50))]:
        layer = SwiGLU(dim, ff)
        x = torch.randn(*shape, dim) * 3
        with torch.no_grad():
            layer.gate.weight[:4] *= 30  # gates far out on both sides
            expected = layer(x)  # not fused: PyTorch's silu
            layer.fuse()
            torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
        x.requires_grad_(True)
        layer(x).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
    if kernels.load() is not None:  # the rows of each no-gradient fused call
        assert calls == [1, 8, 150]


def test_rotary_positions_by_folios_kernel_match_pytorchs(monkeypatch):
    """Without gradients, float32 rotary positions of (B, H, T, d) heads run Folio's kernel (decode_step.c): the
    numbers of RotaryEmbedding's own arithmetic, for a prompt, a decoding step after a cache, a view of a fused
    projection's heads (strided) and per-row positions of a batch; head sizes that are not a multiple of 16 and
    gradients take PyTorch's ops (and the gradient flows)."""
    from folio.nn import kernels

    calls = _kernel_calls(monkeypatch, "folio_rope", lambda args: args[1:5])
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=32, max_len=64)
    fused = torch.randn(3, 5, 4 * 32).view(3, 5, 4, 32).transpose(1, 2)  # (B, heads, T, d) over (B, T, heads·d)
    rows = torch.tensor([[7], [0], [40]])  # each row's own position
    cases = [(torch.randn(2, 4, 6, 32), 0), (torch.randn(2, 4, 1, 32), 9), (fused, 3),
             (torch.randn(3, 2, 1, 32), rows), (fused[:, :3], 0)]
    for x, offset in cases:
        cos, sin = rope._rows(offset, x.size(-2), x.dtype)
        expected = x * cos + x.roll(16, dims=-1) * sin
        with torch.no_grad():
            torch.testing.assert_close(rope(x, offset), expected, atol=1e-6, rtol=1e-6)
    odd = RotaryEmbedding(head_dim=8, max_len=8)
    with torch.no_grad():
        odd(torch.randn(1, 2, 3, 8), 1)  # PyTorch's ops
    x = torch.randn(2, 4, 6, 32, requires_grad=True)
    rope(x, 2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    if kernels.load() is not None:  # (B, H, T, d) of each no-gradient call with whole vector lanes
        assert calls == [(2, 4, 6, 32), (2, 4, 1, 32), (3, 4, 5, 32), (3, 2, 1, 32), (3, 3, 5, 32)]


def _decode_steps(mha: MultiHeadAttention, prompt: Tensor, own: Tensor, steps: Tensor, fused: bool,
                  monkeypatch) -> tuple[Tensor, KVCache]:
    """`mha` reads `prompt` (B, P, C), each row's own positions `own` (B, P) right-aligned, then decodes `steps`
    (B, T, C) one position at a time with a growing cache; `fused` False: without `_decode_attend`."""
    batch = prompt.size(0)
    with monkeypatch.context() as patch, torch.no_grad():
        if not fused:
            patch.setattr(MultiHeadAttention, "_decode_attend", lambda *args: None)
        rows = (own.cumsum(1) - 1).clamp(min=0)
        causal = own[:, None, None, :] | torch.eye(own.size(1), dtype=torch.bool)
        _, _, cache = mha(prompt, mask=causal, causal=True, positions=rows)
        cache, mask, outs = KVCache.growing(cache, limit=128), own, []
        for t in range(steps.size(1)):
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            out, _, cache = mha(steps[:, t : t + 1], mask=mask[:, None, None, :], causal=True, cache=cache,
                                positions=mask.sum(1, keepdim=True) - 1)
            outs.append(out)
        return torch.cat(outs, dim=1), cache


def test_a_decoding_steps_rotation_cache_write_and_attention_by_one_kernel_match_the_operations(monkeypatch):
    """Without gradients, a fused self-attention's decoding step (one new position, a growing cache, rotary
    positions, grouped heads) is one call of Folio's kernel (`folio_decode_attend`): the outputs and the cache of
    the operations' path, for one row and for a batch whose rows sit at different positions (a key mask, each
    row's positions), across the cache's doubling (64 → 128 positions); heads of 8 take the operations."""
    from folio.nn import kernels

    calls = _kernel_calls(monkeypatch, "folio_decode_attend", lambda args: (args[1], args[17]))  # (B, position)
    torch.manual_seed(0)
    for heads, batch in [(4, 1), (4, 2), (8, 2)]:  # head sizes 16, 16, 8
        mha = MultiHeadAttention(64, heads, kv_heads=2, bias=False, rotary_len=128).eval()
        mha.fuse()
        prompt, steps = torch.randn(batch, 5, 64), torch.randn(batch, 70, 64)
        own = torch.tensor([[True] * 5, [False, False, True, True, True]][:batch])  # row 1: 3 positions of its own
        fused_out, fused_cache = _decode_steps(mha, prompt, own, steps, True, monkeypatch)
        plain_out, plain_cache = _decode_steps(mha, prompt, own, steps, False, monkeypatch)
        torch.testing.assert_close(fused_out, plain_out, atol=1e-6, rtol=1e-6)
        for a, b in zip(fused_cache, plain_cache, strict=True):
            assert a.shape == b.shape == (batch, 2, 75, 64 // heads)
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    if kernels.load() is not None:  # every step of the 16-wide heads, at the cache's next position
        assert calls == [(1, 5 + t) for t in range(70)] + [(2, 5 + t) for t in range(70)]


def _llama_block(bias: bool = False) -> TransformerBlock:
    """A small Llama block (RMSNorm, rotary grouped-query attention, SwiGLU) with int4 projections and an int8
    down projection (formats mixed as in GGUF files), fused for inference, with norms that are not all ones."""
    from folio.nn.quant import Int8Linear, quantize_model

    torch.manual_seed(0)
    block = TransformerBlock(64, 4, 96, norm="rms", activation="swiglu", bias=bias, kv_heads=2, rotary_len=128)
    with torch.no_grad():
        block.norm1.weight.uniform_(0.5, 1.5)
        block.norm2.weight.uniform_(0.5, 1.5)
    down = block.ff.down
    quantize_model(block, "int4")
    block.ff.down = Int8Linear.from_float(down.weight, down.bias)
    return fuse_projections(block).eval()


def _block_steps(block: TransformerBlock, prompt: Tensor, own: Tensor, steps: Tensor,
                 fused: bool = True) -> tuple[Tensor, KVCache]:
    """`block` reads `prompt` (B, P, C), each row's own positions `own` (B, P) right-aligned, then decodes `steps`
    (B, T, C) one position at a time with a growing cache, as GPT._run drives it: through `decode_blocks` where it
    takes the step (`fused`), else through the block's layers."""
    batch = prompt.size(0)
    with torch.no_grad():
        rows = (own.cumsum(1) - 1).clamp(min=0)
        causal = own[:, None, None, :] | torch.eye(own.size(1), dtype=torch.bool)
        _, extras = block(prompt, causal, causal=True, positions=rows)
        cache, mask, outs = KVCache.growing(extras["self"], limit=128), own, []
        for t in range(steps.size(1)):
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            x, key_mask, positions = steps[:, t : t + 1], mask[:, None, None, :], mask.sum(1, keepdim=True) - 1
            done = decode_blocks([block], x, key_mask, [cache], positions) if fused else None
            if done is None:
                out, extras = block(x, key_mask, causal=True, cache={"self": cache}, positions=positions)
                cache = extras["self"]
            else:
                out, (cache,) = done
            outs.append(out)
        return torch.cat(outs, dim=1), cache


def test_a_llama_blocks_decoding_step_in_one_kernel_call_matches_its_layers(monkeypatch):
    """Without gradients, a decoding step through a Llama block with quantized layers is one call of Folio's
    kernel (`decode_blocks`): the outputs and the cache of the layers' path, for one row and for a batch whose
    rows sit at different positions, across the cache's doubling. A block with biases, or as many rows as the
    layers multiply by GEMM, runs its layers; new weights loaded into the block are the ones the kernel reads."""
    from folio.nn import kernels

    calls = _kernel_calls(monkeypatch, "folio_decode_blocks", lambda args: (args[1], args[3], args[15]))  # (n, B, position)
    block = _llama_block()
    for batch in (1, 2):
        prompt, steps = torch.randn(batch, 5, 64), torch.randn(batch, 70, 64)
        own = torch.tensor([[True] * 5, [False, False, True, True, True]][:batch])  # row 1: 3 positions of its own
        fused_out, fused_cache = _block_steps(block, prompt, own, steps)
        plain_out, plain_cache = _block_steps(block, prompt, own, steps, fused=False)
        torch.testing.assert_close(fused_out, plain_out, atol=1e-5, rtol=1e-5)
        assert fused_out.abs().max() > 0.1  # (a real output, not zeros on both sides)
        for a, b in zip(fused_cache, plain_cache, strict=True):
            assert a.shape == b.shape == (batch, 2, 75, 16)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    if kernels.load() is None:
        return
    assert calls == [(1, 1, 5 + t) for t in range(70)] + [(1, 2, 5 + t) for t in range(70)]
    calls.clear()
    prompt, steps, own = torch.randn(1, 5, 64), torch.randn(1, 3, 64), torch.ones(1, 5, dtype=torch.bool)
    before, _ = _block_steps(block, prompt, own, steps)
    state = {name: t.clone() for name, t in block.state_dict().items()}
    state["norm2.weight"] = state["norm2.weight"] * 2
    block.load_state_dict(state, assign=True)  # a new tensor for the norm: the kernel must read it
    after, _ = _block_steps(block, prompt, own, steps)
    expected, _ = _block_steps(block, prompt, own, steps, fused=False)
    assert len(calls) == 6 and not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)
    calls.clear()
    _block_steps(_llama_block(bias=True), prompt, own, steps)
    _block_steps(block, torch.randn(64, 5, 64), torch.ones(64, 5, dtype=torch.bool), steps[:, :1].expand(64, 1, 64))
    assert calls == []
