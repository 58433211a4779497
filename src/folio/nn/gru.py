"""A GRU whose CPU training path runs back-propagation through time by hand.

`FastGRU` is a drop-in `torch.nn.GRU`: same arguments, parameters, state-dict keys and maths. On CUDA,
or when no gradient is needed, it calls `nn.GRU`. On CPU with gradients it runs each layer through
`_GRULayer`, which is faster than autograd's generic backward for three reasons:

* every weight gradient and every gate derivative that does not depend on the incoming gradient is
  computed once for the whole sequence, as one large tensor operation, outside the time loop;
* the backward time loop is three small tensor operations per step (autograd's is about twenty);
* the sequential loops run on one thread, where small matrix products are quicker than on two, and the
  large products outside them use every core.

Integer input is read as one-hot indices: the first layer's input projection becomes a row lookup
(mathematically identical to multiplying a one-hot vector, without the product).
See bench/lm_speed.py for the measured gain.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@contextmanager
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _GRULayer(torch.autograd.Function):
    """One GRU layer over a whole sequence, given its input projection.

    gi: (T, B, 3H) = x @ W_ih^T + b_ih, gates in `nn.GRU` order (r, z, n).
    h0: (B, H); w_hh: (3H, H); b_hh: (3H,). Returns the outputs (T, B, H).
    """

    @staticmethod
    def forward(ctx, gi: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
        steps, batch, three_h = gi.shape
        hidden = three_h // 3
        states = gi.new_empty(steps + 1, batch, hidden)  # states[0] = h0, states[t + 1] = h_t
        states[0] = h0
        # becomes h_{t-1} W_hh^T + b_hh. repeat, not expand().contiguous(): with T = B = 1 the expanded
        # view already counts as contiguous, and the in-place products below would overwrite b_hh itself.
        gh_all = b_hh.repeat(steps, batch, 1)
        rz_all = gi.new_empty(steps, batch, 2 * hidden)  # sigmoid(r), sigmoid(z)
        n_all = gi.new_empty(steps, batch, hidden)
        w_hh_t = w_hh.t()
        with _single_thread():
            for t in range(steps):
                gh = gh_all[t].addmm_(states[t], w_hh_t)  # in place: no copy of the bias per step
                rz = torch.add(gi[t, :, : 2 * hidden], gh[:, : 2 * hidden], out=rz_all[t]).sigmoid_()
                n = torch.addcmul(gi[t, :, 2 * hidden :], rz[:, :hidden], gh[:, 2 * hidden :], out=n_all[t])
                n.tanh_()
                torch.lerp(n, states[t], rz[:, hidden:], out=states[t + 1])  # n + z * (h - n)
        ctx.save_for_backward(w_hh, states, gh_all, rz_all, n_all)
        return states[1:]

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        w_hh, states, gh_all, rz_all, n_all = ctx.saved_tensors
        steps, batch, hidden = n_all.shape
        h_prev = states[:-1]
        r, z = rz_all[..., :hidden], rz_all[..., hidden:]
        # dL/d(gate pre-activations) = dL/dh_t * gates[t]; `gates` holds every factor that does not
        # depend on the incoming gradient, for all steps at once. Layout (T, B, 3, H) = (r, z, n).
        gates = states.new_empty(steps, batch, 3, hidden)
        d_npre = torch.addcmul(torch.ones((), dtype=n_all.dtype), n_all, n_all, value=-1)  # 1 - n^2
        d_npre = torch.addcmul(d_npre, d_npre, z, value=-1)  # (1 - z)(1 - n^2)
        torch.mul(torch.addcmul(r, r, r, value=-1) * gh_all[..., 2 * hidden :], d_npre, out=gates[:, :, 0])
        torch.mul(torch.addcmul(z, z, z, value=-1), h_prev - n_all, out=gates[:, :, 1])
        torch.mul(d_npre, r, out=gates[:, :, 2])
        grad_out = grad_out.contiguous()
        dh_all = torch.empty_like(n_all)  # total dL/dh_t per step
        dh = dh_all[steps - 1].copy_(grad_out[steps - 1])
        dgh_t = states.new_empty(batch, 3, hidden)
        with _single_thread():
            for t in range(steps - 1, -1, -1):
                torch.mul(gates[t], dh.unsqueeze(1), out=dgh_t)
                carry = dh * z[t] if t == 0 else torch.addcmul(grad_out[t - 1], dh, z[t], out=dh_all[t - 1])
                dh = carry.addmm_(dgh_t.view(batch, 3 * hidden), w_hh)  # dL/dh_{t-1}
        dgh = gates.mul_(dh_all.unsqueeze(2)).view(steps * batch, 3 * hidden)  # dL/d(gh)
        grad_w_hh = dgh.t() @ h_prev.reshape(steps * batch, hidden)
        grad_b_hh = dgh.sum(0)
        torch.mul(dh_all, d_npre, out=gates[:, :, 2])  # the n gate of dL/d(gi) lacks the factor r
        return gates.view(steps, batch, 3 * hidden), dh, grad_w_hh, grad_b_hh


class FastGRU(nn.GRU):
    """`nn.GRU` with a faster CPU training path; integer input is read as one-hot indices."""

    def forward(self, input: Tensor, hx: Tensor | None = None):  # noqa: A002
        one_hot = not input.is_floating_point()
        if not self._use_fast_path(input, one_hot):
            if one_hot:
                input = F.one_hot(input, self.input_size).to(self.weight_hh_l0.dtype)  # noqa: A001
            return super().forward(input, hx)
        x = input.transpose(0, 1) if self.batch_first else input  # (T, B[, I])
        steps, batch = x.shape[:2]
        if hx is None:
            hx = x.new_zeros(self.num_layers, batch, self.hidden_size, dtype=self.weight_hh_l0.dtype)
        finals = []
        for layer in range(self.num_layers):
            w_ih = getattr(self, f"weight_ih_l{layer}")
            b_ih = getattr(self, f"bias_ih_l{layer}")
            if layer == 0 and one_hot:
                gi = F.embedding(x, w_ih.t().contiguous()) + b_ih  # (T, B, 3H): row lookup == one-hot product
            else:
                gi = F.linear(x, w_ih, b_ih)  # (T, B, 3H), one product for all steps
            x = _GRULayer.apply(gi, hx[layer], getattr(self, f"weight_hh_l{layer}"), getattr(self, f"bias_hh_l{layer}"))
            finals.append(x[-1])
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        out = x.transpose(0, 1) if self.batch_first else x
        return out, torch.stack(finals)

    def _use_fast_path(self, input: Tensor, one_hot: bool) -> bool:
        return (
            input.device.type == "cpu"
            and torch.is_grad_enabled()
            and self.bias
            and not self.bidirectional
            and self.proj_size == 0
            and input.dim() == (2 if one_hot else 3)  # batched input only: (B, T) indices or (B, T, I)
            and self.weight_hh_l0.dtype == torch.float32
            and (one_hot or input.dtype == torch.float32)
        )
