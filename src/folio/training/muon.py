"""Muon (Jordan et al. 2024, "MomentUm Orthogonalized by Newton-Schulz") for a network's hidden matrices,
with AdamW for everything else, in one optimizer (one state dict for checkpoints).

A hidden matrix's update is its Nesterov momentum with the singular values pushed towards 1 by a few
Newton-Schulz iterations: every direction of the weight moves at the same rate, however unevenly the
gradient weighs them. Embeddings, the output layer, biases and norms keep AdamW, as Muon's authors advise.

    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> groups = split_for_muon([{"params": list(model.parameters())}], model)
    >>> [(g["muon"], len(g["params"])) for g in groups]
    [(False, 3), (True, 1)]
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

# The quintic iteration's coefficients from Muon's reference implementation: they push every singular
# value of a normalised matrix into roughly [0.7, 1.2] in five steps, which is as good as exact for training.
_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: Tensor, steps: int = 5) -> Tensor:
    """An approximation of U Vᵀ for g = U S Vᵀ (rows × cols), computed in bfloat16."""
    a, b, c = _NS_COEFFICIENTS
    x = g.bfloat16()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T  # iterate on the smaller Gram matrix
    x = x / (x.norm() + 1e-7)  # singular values ≤ 1
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


def split_for_muon(groups: list[dict], model: nn.Module) -> list[dict]:
    """Each parameter group split in two: Muon for the weights of the model's hidden `nn.Linear` layers,
    AdamW for the rest. The output layer (the model's last `nn.Linear`) and any weight shared with an
    embedding stay with AdamW. Other group settings (such as `lr_scale`) are kept on both halves."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    hidden = {id(m.weight) for m in linears[:-1]} - embedded
    split = []
    for group in groups:
        for use_muon in (False, True):
            params = [p for p in group["params"] if (id(p) in hidden) == use_muon]
            if params:
                split.append({**group, "params": params, "muon": use_muon})
    return split


class Muon(torch.optim.Optimizer):
    """Groups flagged `muon: True` take Muon steps (lr ~0.02); the others AdamW (the usual ~1e-3).

    Weight decay is decoupled in both (p ← p·(1 - lr·weight_decay)).
    """

    def __init__(self, groups: list[dict], lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, betas=betas, eps=eps,
                        weight_decay=weight_decay, muon=False)
        super().__init__(groups, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.ndim != 2 for p in group["params"]):
                raise ValueError("Muon groups hold matrices only")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon if group["muon"] else self._adamw)(group, params)
        return loss

    def _muon(self, group: dict, params: list[Tensor]) -> None:
        """Under data parallelism (gradients already averaged, so every process holds the same momentum)
        process r orthogonalises matrices r, r + N, r + 2N, ... and one all-reduce shares the results."""
        lr, momentum = group["lr"], group["momentum"]
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
        updates = []
        for i, p in enumerate(params):
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.mul_(momentum).add_(p.grad)
            direction = p.grad.add(buf, alpha=momentum) if group["nesterov"] else buf
            updates.append(orthogonalize(direction, group["ns_steps"]) if i % world == rank else torch.zeros_like(p))
        if world > 1:
            flat = torch.cat([u.flatten() for u in updates])
            dist.all_reduce(flat)
            updates = flat.split([p.numel() for p in params])
        for p, update in zip(params, updates, strict=True):
            update = update.view_as(p)
            p.mul_(1 - lr * group["weight_decay"])
            p.add_(update, alpha=-lr * math.sqrt(max(1.0, p.size(0) / p.size(1))))

    def _adamw(self, group: dict, params: list[Tensor]) -> None:
        lr, (beta1, beta2) = group["lr"], group["betas"]
        for p in params:
            state = self.state[p]
            if not state:
                state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            state["step"] += 1
            step = state["step"]
            state["exp_avg"].lerp_(p.grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denom = (state["exp_avg_sq"] / (1 - beta2**step)).sqrt_().add_(group["eps"])
            p.mul_(1 - lr * group["weight_decay"])
            p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1**step))
