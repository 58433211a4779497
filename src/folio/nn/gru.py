"""A GRU whose CPU training path runs back-propagation through time by hand.

`FastGRU` is a drop-in `torch.nn.GRU`: same arguments, parameters, state-dict keys and maths. On CUDA,
or when no gradient is needed, it calls `nn.GRU`. On CPU with gradients the whole layer stack is one
autograd Function, `_GRUStack`, which is faster than autograd's generic backward because:

* the per-time-step loops are a handful of in-place tensor operations (autograd's backward is about
  twenty per step), and every gate derivative that does not depend on the incoming gradient is computed
  for a block of steps at once, outside the step loop;
* the step loops are TorchScript functions, so they run without the Python GIL, and the layers are
  pipelined over threads: while layer 1 runs time steps [k*C, (k+1)*C), layer 0 runs the next chunk
  (forward) or the previous one (backward). Each thread runs its operations on one intra-op thread,
  where the small (batch x hidden) matrix products are quicker than on two, so a 2-layer GRU keeps two
  cores busy instead of one;
* the large products (input projections, weight gradients) are done per chunk inside the same
  pipeline, so they overlap with the other layer's step loop.

Integer input is read as one-hot indices: the first layer's input projection becomes a row lookup
(mathematically identical to multiplying a one-hot vector, without the product).

Dropout between layers draws its mask from a `torch.Generator` seeded from the default generator, one
per layer boundary, so results depend only on `torch.manual_seed` and not on thread timing. The mask
is an exact Bernoulli(1 - p) draw from `torch.rand` (24-bit uniforms, as `F.dropout` itself), scaled by
1 / (1 - p). The random stream differs from `nn.GRU`'s, so results with dropout match `nn.GRU` in
distribution, not bit for bit.

See bench/lm_speed.py for the measured gain.
"""

from __future__ import annotations

import queue
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Time steps per pipeline chunk: small enough that the pipeline fills quickly (the second layer waits
# for one chunk), large enough that the per-chunk bookkeeping and the per-chunk products stay cheap.
_CHUNK = 10


# --------------------------------------------------------------------------------------------------
# Step loops. Written in the TorchScript subset so that they can be scripted (run without the GIL);
# if scripting is unavailable they run as plain Python, without the thread pipeline.
# --------------------------------------------------------------------------------------------------


def _forward_steps(pre: Tensor, gi_n: Tensor, states: Tensor, n_all: Tensor, w_hh_t: Tensor, t0: int, t1: int) -> None:
    """Runs steps [t0, t1) of one layer in place.

    pre:    (T, B, 3H) on entry [x W_ir + b_ir + b_hr, x W_iz + b_iz + b_hz, b_hn];
            on exit [sigmoid(r), sigmoid(z), h W_hn + b_hn] (what backward needs).
    gi_n:   (T, B, H) x W_in + b_in.
    states: (T + 1, B, H), states[0] = h0, filled with states[t + 1] = h_t.
    n_all:  (T, B, H) filled with the candidate n_t.
    w_hh_t: (H, 3H) = W_hh^T.
    """
    hidden = n_all.shape[2]
    for t in range(t0, t1):
        p = pre[t].addmm_(states[t], w_hh_t)  # (B, 3H): adds h W_hh^T to the preset biases / inputs
        rz = p[:, : 2 * hidden].sigmoid_()
        n = torch.addcmul(gi_n[t], rz[:, :hidden], p[:, 2 * hidden :], out=n_all[t])  # (B, H)
        n.tanh_()
        torch.lerp(n, states[t], rz[:, hidden:], out=states[t + 1])  # n + z * (h - n)


def _backward_steps(
    grad: Tensor, dh: Tensor, gates: Tensor, z: Tensor, dh_all: Tensor, w_hh: Tensor, t0: int, t1: int
) -> Tensor:
    """Back-propagates steps [t1 - 1 .. t0] of one layer; returns dL/dh_{t0 - 1} (without grad[t0 - 1]).

    grad:   (T, B, H) dL/dh_t from above (the layer output's gradient).
    dh:     (B, H) the carry dL/dh_{t1 - 1} from the later steps (not yet including grad[t1 - 1]).
    gates:  (T, B, 3, H) on entry the factors d(gate pre-activations)/dh_t, on exit (for these steps)
            dL/d(h W_hh^T + b_hh) in (r, z, n) order.
    z:      (T, B, H) sigmoid(z).
    dh_all: (T, B, H) filled with the total dL/dh_t.
    w_hh:   (3H, H).
    """
    batch = dh.shape[0]
    dh = torch.add(dh, grad[t1 - 1], out=dh_all[t1 - 1])
    for t in range(t1 - 1, t0 - 1, -1):
        dgh = gates[t].mul_(dh.unsqueeze(1))  # (B, 3, H)
        if t > t0:
            carry = torch.addcmul(grad[t - 1], dh, z[t], out=dh_all[t - 1])
        else:
            carry = dh * z[t]
        dh = carry.addmm_(dgh.view(batch, -1), w_hh)  # dL/dh_{t-1}
    return dh


def _script(fn):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.script is deprecated in favour of torch.compile
            return torch.jit.script(fn), True
    except Exception:  # noqa: BLE001 - TorchScript missing or broken: run the same loop in Python
        return fn, False


_steps = None  # (forward_steps, backward_steps, scripted), scripted lazily on first use
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _step_fns():
    global _steps
    if _steps is None:
        fwd, ok_f = _script(_forward_steps)
        bwd, ok_b = _script(_backward_steps)
        _steps = (fwd, bwd, ok_f and ok_b)
    return _steps


def _run_layers(work, num_layers: int):
    """Runs work(layer) for every layer, each on its own thread (the top layer on this one)."""
    global _pool
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        if num_layers == 1:
            work(0)
            return
        with _pool_lock:
            if _pool is None or _pool._max_workers < num_layers - 1:
                _pool = ThreadPoolExecutor(max_workers=num_layers - 1, thread_name_prefix="folio-gru")
        futures = [_pool.submit(_single_threaded, work, layer) for layer in range(num_layers - 1)]
        try:
            work(num_layers - 1)
        finally:
            for f in futures:
                f.result()
    finally:
        torch.set_num_threads(threads)


def _single_threaded(work, layer):
    torch.set_num_threads(1)  # per-thread OpenMP setting: small products are faster on one thread
    with torch.no_grad():  # grad mode is per thread; autograd Functions compute without recording
        return work(layer)


class _Pipe:
    """Hands chunk indices from one layer's thread to the next; None means the sender failed."""

    def __init__(self):
        self._q = queue.SimpleQueue()

    def put(self, k):
        self._q.put(k)

    def get(self):
        k = self._q.get()
        if k is None:
            raise RuntimeError("FastGRU: another layer's thread failed")
        return k


def _chunks(steps: int) -> list[tuple[int, int]]:
    return [(t, min(t + _CHUNK, steps)) for t in range(0, steps, _CHUNK)]


class _GRUStack(torch.autograd.Function):
    """All layers of a unidirectional GRU with biases, for a whole sequence.

    x: (T, B) integer indices (one-hot input over input_size) or (T, B, I) floats.
    hx: (L, B, H). dropout: probability between layers (0 for none). weights: for each layer
    W_ih (3H, I or H), W_hh (3H, H), b_ih (3H,), b_hh (3H,). Returns output (T, B, H) and h_n (L, B, H).
    """

    @staticmethod
    def forward(ctx, x: Tensor, hx: Tensor, dropout: float, input_size: int, *weights: Tensor):
        fwd_steps, _, scripted = _step_fns()
        num_layers, batch, hidden = hx.shape
        steps = x.shape[0]
        one_hot = not x.is_floating_point()
        chunks = _chunks(steps)
        new = hx.new_empty
        states = [new(steps + 1, batch, hidden) for _ in range(num_layers)]  # states[l][t + 1] = h_t
        pres = [new(steps, batch, 3 * hidden) for _ in range(num_layers)]
        gi_ns = [new(steps, batch, hidden) for _ in range(num_layers)]
        n_alls = [new(steps, batch, hidden) for _ in range(num_layers)]
        xins = [x] + [new(steps, batch, hidden) for _ in range(num_layers - 1)]  # each layer's input
        masks: list[Tensor | None] = [None] * num_layers  # masks[l]: dropout mask on layer l's input
        gens: list[torch.Generator | None] = [None] * num_layers
        if dropout > 0:
            for layer in range(1, num_layers):
                masks[layer] = new(steps, batch, hidden)
                # Seeded from the default generator: reproducible under torch.manual_seed whatever the
                # order in which the threads run.
                seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
                gens[layer] = torch.Generator().manual_seed(seed)
        pipes = [_Pipe() for _ in range(num_layers)]  # pipes[l]: layer l's output chunks are ready

        def layer_forward(layer: int):
            try:
                w_ih, w_hh, b_ih, b_hh = weights[4 * layer : 4 * layer + 4]
                w_hh_t = w_hh.t()
                # Bias of pre: [b_ir + b_hr, b_iz + b_hz, b_in]; the b_in column block is then moved to gi_n
                # and replaced by b_hn, which belongs inside r * (h W_hn + b_hn).
                bias = torch.cat((b_ih[: 2 * hidden] + b_hh[: 2 * hidden], b_ih[2 * hidden :]))
                pre, gi_n, state = pres[layer], gi_ns[layer], states[layer]
                state[0] = hx[layer]
                if layer == 0 and one_hot:
                    table = w_ih.t() + bias  # (I, 3H): row i = one-hot(i) W_ih^T + bias
                for t0, t1 in chunks:
                    if layer > 0:
                        pipes[layer - 1].get()
                        h_below = states[layer - 1][t0 + 1 : t1 + 1]  # (C, B, H)
                        if masks[layer] is not None:
                            m = masks[layer][t0:t1]
                            torch.rand(m.shape, generator=gens[layer], out=m)
                            m.ge_(dropout).mul_(1 / (1 - dropout))  # Bernoulli(1 - p) / (1 - p)
                            torch.mul(h_below, m, out=xins[layer][t0:t1])
                        else:
                            xins[layer][t0:t1] = h_below
                    xc = xins[layer][t0:t1]
                    pc = pre[t0:t1]
                    if layer == 0 and one_hot:
                        torch.index_select(table, 0, xc.reshape(-1), out=pc.view(-1, 3 * hidden))
                    else:
                        torch.addmm(bias, xc.reshape(-1, xc.shape[-1]), w_ih.t(), out=pc.view(-1, 3 * hidden))
                    gi_n[t0:t1] = pc[..., 2 * hidden :]
                    pc[..., 2 * hidden :] = b_hh[2 * hidden :]
                    fwd_steps(pre, gi_n, state, n_alls[layer], w_hh_t, t0, t1)
                    pipes[layer].put(t0)
            except BaseException:
                pipes[layer].put(None)
                raise

        if scripted:
            _run_layers(layer_forward, num_layers)
        else:  # without TorchScript the threads would fight over the GIL: run the layers one by one
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for layer in range(num_layers):
                    layer_forward(layer)
            finally:
                torch.set_num_threads(threads)

        ctx.dims = (num_layers, steps, batch, hidden, one_hot, input_size, scripted)
        ctx.save_for_backward(x, *weights, *states, *pres, *n_alls, *xins[1:], *[m for m in masks if m is not None])
        ctx.has_masks = dropout > 0
        h_n = torch.stack([s[steps] for s in states])
        return states[-1][1:], h_n

    @staticmethod
    def backward(ctx, grad_out: Tensor | None, grad_hn: Tensor | None):
        num_layers, steps, batch, hidden, one_hot, input_size, scripted = ctx.dims
        _, bwd_steps, _ = _step_fns()
        saved = list(ctx.saved_tensors)
        x = saved.pop(0)
        weights = [saved.pop(0) for _ in range(4 * num_layers)]
        states = [saved.pop(0) for _ in range(num_layers)]
        pres = [saved.pop(0) for _ in range(num_layers)]
        n_alls = [saved.pop(0) for _ in range(num_layers)]
        xins = [x] + [saved.pop(0) for _ in range(num_layers - 1)]
        masks = [None] + ([saved.pop(0) for _ in range(num_layers - 1)] if ctx.has_masks else [None] * (num_layers - 1))
        chunks = _chunks(steps)
        new = states[0].new_empty
        need_x = ctx.needs_input_grad[0]
        need_hx = ctx.needs_input_grad[1]

        # grads[l]: dL/d(layer l's output h_t), (T, B, H); the top one is the incoming gradient, lower
        # ones are filled chunk by chunk by the layer above.
        grads = [new(steps, batch, hidden) for _ in range(num_layers - 1)]
        if grad_out is None:
            grads.append(states[0].new_zeros(steps, batch, hidden))
        else:
            grads.append(grad_out.contiguous())
        dgis = [new(steps, batch, 3 * hidden) for _ in range(num_layers)]  # dL/d(x W_ih^T + b_ih)
        pipes = [_Pipe() for _ in range(num_layers)]  # pipes[l]: dgis[l] chunk is ready
        grad_weights: list[Tensor | None] = [None] * (4 * num_layers)
        grad_h0: list[Tensor | None] = [None] * num_layers
        grad_x: Tensor | None = None
        if need_x and not one_hot:
            grad_x = new(x.shape)

        def layer_backward(layer: int):
            nonlocal grad_x
            try:
                w_ih, w_hh, _, _ = weights[4 * layer : 4 * layer + 4]
                state, pre, n_all, grad = states[layer], pres[layer], n_alls[layer], grads[layer]
                r, z, gh_n = pre[..., :hidden], pre[..., hidden : 2 * hidden], pre[..., 2 * hidden :]
                gates = new(steps, batch, 3, hidden)
                d_npre = new(steps, batch, hidden)
                dh_all = new(steps, batch, hidden)
                dgi = dgis[layer]
                g_w_hh = torch.zeros_like(w_hh)
                g_w_ih = torch.zeros(input_size, 3 * hidden) if layer == 0 and one_hot else torch.zeros_like(w_ih)
                g_b_hh = w_hh.new_zeros(3 * hidden)
                g_b_ih = w_hh.new_zeros(3 * hidden)
                dh = state.new_zeros(batch, hidden)
                if grad_hn is not None:
                    dh += grad_hn[layer]
                for t0, t1 in reversed(chunks):
                    if layer < num_layers - 1:
                        # Gradient of this layer's output from the layer above: dL/d(its input) * mask.
                        pipes[layer + 1].get()
                        gc = grad[t0:t1].view(-1, hidden)
                        torch.mm(dgis[layer + 1][t0:t1].view(-1, 3 * hidden), weights[4 * (layer + 1)], out=gc)
                        if masks[layer + 1] is not None:
                            gc.mul_(masks[layer + 1][t0:t1].view(-1, hidden))
                    # Factors of d(gate pre-activations)/dh_t that do not depend on the gradient, (C, B, 3, H).
                    rc, zc, nc = r[t0:t1], z[t0:t1], n_all[t0:t1]
                    dn = d_npre[t0:t1]
                    torch.addcmul(torch.ones((), dtype=nc.dtype), nc, nc, value=-1, out=dn)  # 1 - n^2
                    dn.addcmul_(dn, zc, value=-1)  # (1 - z)(1 - n^2)
                    gc3 = gates[t0:t1]
                    torch.mul(torch.addcmul(rc, rc, rc, value=-1).mul_(gh_n[t0:t1]), dn, out=gc3[:, :, 0])
                    torch.mul(torch.addcmul(zc, zc, zc, value=-1), state[t0:t1] - nc, out=gc3[:, :, 1])
                    torch.mul(dn, rc, out=gc3[:, :, 2])
                    dh = bwd_steps(grad, dh, gates, z, dh_all, w_hh, t0, t1)
                    # gates[t0:t1] now holds dL/d(h W_hh^T + b_hh); dL/d(x W_ih^T + b_ih) differs in the
                    # n block, which lacks the factor r.
                    dgh = gc3.view(-1, 3 * hidden)  # (C*B, 3H)
                    dgic = dgi[t0:t1]
                    dgic[..., : 2 * hidden] = gc3[:, :, :2].reshape(t1 - t0, batch, 2 * hidden)
                    torch.mul(dh_all[t0:t1], dn, out=dgic[..., 2 * hidden :])
                    pipes[layer].put(t0)
                    dgic = dgic.view(-1, 3 * hidden)
                    g_w_hh.addmm_(dgh.t(), state[t0:t1].reshape(-1, hidden))
                    g_b_hh += dgh.sum(0)
                    g_b_ih += dgic.sum(0)
                    xc = xins[layer][t0:t1]
                    if layer == 0 and one_hot:
                        g_w_ih.index_add_(0, xc.reshape(-1), dgic)
                    else:
                        g_w_ih.addmm_(dgic.t(), xc.reshape(-1, xc.shape[-1]))
                        if layer == 0 and grad_x is not None:
                            torch.mm(dgic, w_ih, out=grad_x[t0:t1].view(-1, x.shape[-1]))
                grad_weights[4 * layer : 4 * layer + 4] = [
                    g_w_ih.t().contiguous() if layer == 0 and one_hot else g_w_ih,
                    g_w_hh,
                    g_b_ih,
                    g_b_hh,
                ]
                grad_h0[layer] = dh
            except BaseException:
                pipes[layer].put(None)
                raise

        if scripted:
            _run_layers(layer_backward, num_layers)
        else:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for layer in reversed(range(num_layers)):
                    layer_backward(layer)
            finally:
                torch.set_num_threads(threads)
        grad_hx = torch.stack(grad_h0) if need_hx else None
        return (grad_x, grad_hx, None, None, *grad_weights)


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
        if one_hot:
            x = x.contiguous()
        if hx is None:
            hx = x.new_zeros(self.num_layers, batch, self.hidden_size, dtype=self.weight_hh_l0.dtype)
        dropout = float(self.dropout) if self.training else 0.0
        out, h_n = _GRUStack.apply(x, hx, dropout, self.input_size, *self._flat_weights)
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, h_n

    def _use_fast_path(self, input: Tensor, one_hot: bool) -> bool:
        return (
            input.device.type == "cpu"
            and torch.is_grad_enabled()
            and self.bias
            and not self.bidirectional
            and self.proj_size == 0
            and input.dim() == (2 if one_hot else 3)  # batched input only
            and self.weight_hh_l0.dtype == torch.float32
            and (input.dtype == torch.float32 or one_hot)
        )
