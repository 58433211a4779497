"""A GRU whose CPU training path runs back-propagation through time by hand.

`FastGRU` is a drop-in `torch.nn.GRU`: same arguments, parameters, state-dict keys and maths. On CUDA
it calls `nn.GRU` (cuDNN). A single step without gradients (generation) runs as one `torch.gru_cell`
per layer, several times cheaper than `nn.GRU`'s per-call set-up. On CPU with gradients it runs each
layer through `_GRULayer`, which is faster than autograd's generic backward for three reasons:

* every weight gradient and every gate derivative that does not depend on the incoming gradient is
  computed once for the whole sequence, as one large tensor operation, outside the time loop;
* the backward time loop is three small tensor operations per step (autograd's is about twenty);
* the bias and the input projection of the r and z gates are added for all steps before the loop, and
  per-step views are made in one call.

Integer input is read as one-hot indices: the first layer's input projection becomes a row lookup
(mathematically identical to multiplying a one-hot vector, without the product).
See bench/lm_speed.py for the measured gain.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

_PAGE = 4096
_DROPOUT_RESOLUTION = 1 << 15


def _dropout(x: Tensor, p: float) -> Tensor:
    """Inverted dropout whose mask costs a third of `F.dropout`'s on CPU.

    `bernoulli_` draws one random number per element; here each 64-bit random word gives four 15-bit
    uniform integers, so p is applied at a resolution of 1/32768 (an error below 2e-5).
    """
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_()  # 63 random bits each
    uniform = words.view(torch.int16)[: x.numel()] & (_DROPOUT_RESOLUTION - 1)  # (N,) in [0, 32768)
    keep = uniform >= round(p * _DROPOUT_RESOLUTION)
    return x * (keep.view(x.shape) * (1.0 / (1.0 - p))).to(x.dtype)


def _staggered(anchor: Tensor, shape: tuple[int, ...], offset: int) -> Tensor:
    """An empty buffer whose start lies `offset` bytes after `anchor`'s start, modulo 4 KiB.

    The time loops read and write one slice of several buffers per step, and those slices keep the
    same offsets modulo 4 KiB at every step. When a load's address matches an earlier store's modulo
    4 KiB, the CPU stalls it until the store is resolved ("4K aliasing"); buffers that happen to share an
    alignment made the forward loop up to 1.6x slower. Fixing distinct offsets removes the lottery.
    """
    size = anchor.element_size()
    block = anchor.new_empty(math.prod(shape) + _PAGE // size)
    shift = (offset - (block.data_ptr() - anchor.data_ptr())) % _PAGE // size
    return block[shift : shift + math.prod(shape)].view(shape)


class _GRULayer(torch.autograd.Function):
    """One GRU layer over a whole sequence, given its input projection.

    gi: (T, B, 3H) = x @ W_ih^T + b_ih, gates in `nn.GRU` order (r, z, n).
    h0: (B, H); w_hh: (3H, H); b_hh: (3H,). Returns the outputs (T, B, H).
    Per-step views are made once with `unbind` (one C++ call) rather than indexed in the loop.
    """

    @staticmethod
    def forward(ctx, gi: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
        steps, batch, three_h = gi.shape
        hidden = three_h // 3
        states = _staggered(gi, (steps + 1, batch, hidden), 1024)  # states[0] = h0, states[t + 1] = h_t
        states[0] = h0
        n_all = _staggered(gi, (steps, batch, hidden), 2048)
        pre = _staggered(gi, gi.shape, 3072)
        # pre[t] starts as (gi_r + b_hr, gi_z + b_hz, b_hn); adding h_{t-1} W_hh^T in place then leaves the
        # r and z pre-activations in the first 2H columns and gh_n = h_{t-1} W_hn^T + b_hn in the last H.
        torch.add(gi, b_hh, out=pre)  # one contiguous pass; the n columns are then reset to b_hn
        pre[..., 2 * hidden :] = b_hh[2 * hidden :]
        w_hh_t = w_hh.t()
        step_views = zip(
            pre.unbind(0), pre[..., : 2 * hidden].unbind(0), pre[..., hidden : 2 * hidden].unbind(0),
            pre[..., 2 * hidden :].unbind(0), gi[..., 2 * hidden :].unbind(0), n_all.unbind(0),
            states[:-1].unbind(0), states[1:].unbind(0), strict=True,
        )
        for pre_t, rz_t, z_t, ghn_t, gin_t, n_t, h_prev, h_next in step_views:
            pre_t.addmm_(h_prev, w_hh_t)
            rz_t.sigmoid_()  # now (r, z)
            torch.addcmul(gin_t, rz_t[:, :hidden], ghn_t, out=n_t).tanh_()  # n = tanh(gi_n + r * gh_n)
            torch.lerp(n_t, h_prev, z_t, out=h_next)  # h = n + z * (h_prev - n)
        ctx.save_for_backward(w_hh, states, pre, n_all)
        return states[1:]

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        w_hh, states, pre, n_all = ctx.saved_tensors
        steps, batch, hidden = n_all.shape
        h_prev = states[:-1]
        r, z, gh_n = pre[..., :hidden], pre[..., hidden : 2 * hidden], pre[..., 2 * hidden :]
        # dL/d(gate pre-activations) = dL/dh_t * gates[t]; `gates` holds every factor that does not
        # depend on the incoming gradient, for all steps at once. Layout (T, B, 3, H) = (r, z, n).
        grad_out = grad_out.contiguous()
        gates = _staggered(grad_out, (steps, batch, 3, hidden), 1024)
        dh_all = _staggered(grad_out, n_all.shape, 2048)  # total dL/dh_t per step
        d_npre = torch.addcmul(torch.ones((), dtype=n_all.dtype), n_all, n_all, value=-1)  # 1 - n^2
        d_npre = torch.addcmul(d_npre, d_npre, z, value=-1)  # (1 - z)(1 - n^2)
        torch.mul(torch.addcmul(r, r, r, value=-1) * gh_n, d_npre, out=gates[:, :, 0])
        torch.mul(torch.addcmul(z, z, z, value=-1), h_prev - n_all, out=gates[:, :, 1])
        torch.mul(d_npre, r, out=gates[:, :, 2])
        grad_out = grad_out.contiguous()
        dh = dh_all[steps - 1].copy_(grad_out[steps - 1])
        dgh_t = states.new_empty(batch, 3, hidden)
        dgh_flat = dgh_t.view(batch, 3 * hidden)
        gates_t, z_t, grad_t, dh_t = gates.unbind(0), z.unbind(0), grad_out.unbind(0), dh_all.unbind(0)
        for t in range(steps - 1, 0, -1):
            torch.mul(gates_t[t], dh.unsqueeze(1), out=dgh_t)
            dh = torch.addcmul(grad_t[t - 1], dh, z_t[t], out=dh_t[t - 1]).addmm_(dgh_flat, w_hh)  # dL/dh_{t-1}
        torch.mul(gates_t[0], dh.unsqueeze(1), out=dgh_t)
        dh0 = torch.addmm(dh * z_t[0], dgh_flat, w_hh)
        dgh = gates.mul_(dh_all.unsqueeze(2)).view(steps * batch, 3 * hidden)  # dL/d(gh)
        grad_w_hh = dgh.t() @ h_prev.reshape(steps * batch, hidden)
        grad_b_hh = dgh.sum(0)
        torch.mul(dh_all, d_npre, out=gates[:, :, 2])  # the n gate of dL/d(gi) lacks the factor r
        return gates.view(steps, batch, 3 * hidden), dh0, grad_w_hh, grad_b_hh


class FastGRU(nn.GRU):
    """`nn.GRU` with a faster CPU training path; integer input is read as one-hot indices."""

    def forward(self, input: Tensor, hx: Tensor | None = None):  # noqa: A002
        one_hot = not input.is_floating_point()
        if self._is_single_step(input, one_hot):
            return self._step(input, hx, one_hot)
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
                x = _dropout(x, self.dropout)
        out = x.transpose(0, 1) if self.batch_first else x
        return out, torch.stack(finals)

    def _is_single_step(self, input: Tensor, one_hot: bool) -> bool:
        time_dim = 1 if self.batch_first else 0
        return (
            not torch.is_grad_enabled()
            and not (self.training and self.dropout > 0)
            and input.dim() == (2 if one_hot else 3)
            and input.size(time_dim) == 1
            and self.bias
            and not self.bidirectional
            and self.proj_size == 0
        )

    def _step(self, input: Tensor, hx: Tensor | None, one_hot: bool):  # noqa: A002
        """One time step for every sequence in the batch: (B, 1[, I]) → (B, 1, H), (L, B, H)."""
        x = input.reshape(input.size(0) * input.size(1), -1)  # (B, I) or (B, 1) ids
        batch = x.size(0)
        if hx is None:
            hx = x.new_zeros(self.num_layers, batch, self.hidden_size, dtype=self.weight_hh_l0.dtype)
        states = []
        for layer in range(self.num_layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(self, f"bias_ih_l{layer}"), getattr(self, f"bias_hh_l{layer}")
            if layer == 0 and one_hot:
                x = F.one_hot(x.view(batch), self.input_size).to(w_ih.dtype)
            x = torch.gru_cell(x, hx[layer], w_ih, w_hh, b_ih, b_hh)  # (B, H); no dropout: no training here
            states.append(x)
        out = x.unsqueeze(1) if self.batch_first else x.unsqueeze(0)
        return out, torch.stack(states)

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
