"""FastGRU against nn.GRU: outputs, h_n and every gradient; dropout; a tiny model that learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from folio.nn.gru import FastGRU

TOL = dict(atol=1e-5, rtol=1e-5)


def _pair(input_size, hidden, layers, batch_first, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    ref = nn.GRU(input_size, hidden, layers, batch_first=batch_first, dropout=dropout)
    fast = FastGRU(input_size, hidden, layers, batch_first=batch_first, dropout=dropout)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.mark.parametrize(
    "input_size,hidden,layers,batch_first,with_h0,one_hot,steps,batch",
    [
        (7, 16, 1, False, True, False, 9, 3),
        (7, 16, 1, True, False, True, 9, 3),
        (65, 32, 2, True, False, True, 23, 5),
        (65, 32, 2, True, True, True, 17, 4),
        (5, 8, 3, True, True, False, 31, 4),
        (11, 16, 3, False, True, True, 12, 2),
        (6, 12, 2, False, False, False, 1, 1),
    ],
)
def test_matches_nn_gru(input_size, hidden, layers, batch_first, with_h0, one_hot, steps, batch):
    ref, fast = _pair(input_size, hidden, layers, batch_first)
    shape = (batch, steps) if batch_first else (steps, batch)
    idx = torch.randint(0, input_size, shape)
    x = F.one_hot(idx, input_size).float() if one_hot else torch.randn(*shape, input_size)
    x.requires_grad_(not one_hot)
    h0 = torch.randn(layers, batch, hidden, requires_grad=True) if with_h0 else None

    out_ref, hn_ref = ref(x, h0)
    out_fast, hn_fast = fast(idx if one_hot else x, h0)
    torch.testing.assert_close(out_fast, out_ref, **TOL)
    torch.testing.assert_close(hn_fast, hn_ref, **TOL)

    # A loss that uses both outputs, with random weights so that every gradient path is exercised.
    w_out, w_hn = torch.randn_like(out_ref), torch.randn_like(hn_ref)
    extra = ([] if one_hot else [x]) + ([h0] if with_h0 else [])
    grads_ref = torch.autograd.grad((out_ref * w_out).sum() + (hn_ref * w_hn).sum(), [*ref.parameters(), *extra])
    grads_fast = torch.autograd.grad((out_fast * w_out).sum() + (hn_fast * w_hn).sum(), [*fast.parameters(), *extra])
    names = [n for n, _ in ref.named_parameters()] + ["input"] * (not one_hot) + ["h0"] * with_h0
    for name, g_fast, g_ref in zip(names, grads_fast, grads_ref, strict=True):
        torch.testing.assert_close(g_fast, g_ref, **TOL, msg=lambda m, name=name: f"{name}: {m}")


def test_output_only_loss_and_state_dict_keys():
    ref, fast = _pair(10, 8, 2, True)
    assert list(fast.state_dict()) == list(ref.state_dict())
    idx = torch.randint(0, 10, (3, 6))
    out_ref, _ = ref(F.one_hot(idx, 10).float())
    out_fast, _ = fast(idx)
    g_ref = torch.autograd.grad(out_ref.square().sum(), list(ref.parameters()))
    g_fast = torch.autograd.grad(out_fast.square().sum(), list(fast.parameters()))
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_no_grad_falls_back_to_nn_gru():
    ref, fast = _pair(9, 8, 2, True)
    idx = torch.randint(0, 9, (2, 5))
    with torch.no_grad():
        out_ref, hn_ref = ref(F.one_hot(idx, 9).float())
        out_fast, hn_fast = fast(idx)
    torch.testing.assert_close(out_fast, out_ref, **TOL)
    torch.testing.assert_close(hn_fast, hn_ref, **TOL)


def test_unbatched_input_uses_nn_gru_path():
    ref, fast = _pair(4, 6, 2, False)
    x = torch.randn(5, 4, requires_grad=True)  # (T, I): unbatched
    out_ref, hn_ref = ref(x)
    out_fast, hn_fast = fast(x)
    torch.testing.assert_close(out_fast, out_ref, **TOL)
    torch.testing.assert_close(hn_fast, hn_ref, **TOL)


def test_dropout_seeded_and_eval_ignores_it():
    ref, fast = _pair(12, 16, 2, True, dropout=0.5)
    idx = torch.randint(0, 12, (4, 10))
    fast.train()
    torch.manual_seed(123)
    out_a, hn_a = fast(idx)
    torch.manual_seed(123)
    out_b, hn_b = fast(idx)
    torch.testing.assert_close(out_a, out_b, atol=0, rtol=0)
    torch.testing.assert_close(hn_a, hn_b, atol=0, rtol=0)
    torch.manual_seed(124)
    out_c, _ = fast(idx)
    assert not torch.equal(out_a, out_c), "a different seed should give a different dropout mask"

    # The first layer's state comes before dropout, exactly as nn.GRU's h_n.
    ref.train()
    _, hn_ref = ref(F.one_hot(idx, 12).float())
    torch.testing.assert_close(hn_a[0], hn_ref[0], **TOL)

    # eval(): dropout off, identical to nn.GRU (with gradients, so the fast path runs).
    fast.eval()
    ref.eval()
    out_e, hn_e = fast(idx)
    out_r, hn_r = ref(F.one_hot(idx, 12).float())
    torch.testing.assert_close(out_e, out_r, **TOL)
    torch.testing.assert_close(hn_e, hn_r, **TOL)


def test_tiny_model_learns_a_repeated_pattern():
    torch.manual_seed(0)
    text = "abcab cbaab! " * 40
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text])
    gru = FastGRU(len(vocab), 32, 2, dropout=0.1, batch_first=True)
    head = nn.Linear(32, len(vocab))
    opt = torch.optim.Adam([*gru.parameters(), *head.parameters()], lr=1e-2)
    window, batch = 24, 16
    for _ in range(150):
        starts = torch.randint(0, len(ids) - window - 1, (batch,))
        chunk = torch.stack([ids[s : s + window + 1] for s in starts.tolist()])
        out, _ = gru(chunk[:, :-1])
        loss = F.cross_entropy(head(out).reshape(-1, len(vocab)), chunk[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    # The pattern is deterministic after a few characters; uniform guessing would be ln(6) ~ 1.79.
    assert loss.item() < 0.3


def test_fast_dropout_drops_the_stated_fraction_and_rescales():
    from folio.nn.gru import _dropout

    torch.manual_seed(0)
    x = torch.ones(200, 32, 64)
    for p in (0.1, 0.2, 0.5):
        y = _dropout(x, p)
        dropped = (y == 0).float().mean().item()
        assert abs(dropped - p) < 0.005
        assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - p)))
    torch.manual_seed(1)
    a = _dropout(x, 0.2)
    torch.manual_seed(1)
    assert torch.equal(a, _dropout(x, 0.2))
