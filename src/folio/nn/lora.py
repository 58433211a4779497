"""Low-rank adapters (LoRA, Hu et al. 2021) for fine-tuning a pretrained model: a frozen linear layer W plus a
trained low-rank update, y = W x + (alpha / r) · B A x, with A (r, in) random and B (out, r) zero at the start,
so training begins from the pretrained function and updates r · (in + out) numbers per layer instead of in · out.

    >>> model = add_lora(Llama.from_pretrained("smollm2"), rank=8)       # doctest: +SKIP
    >>> sum(p.numel() for p in model.parameters() if p.requires_grad)    # doctest: +SKIP
    4884480

An adapted layer's state dict is a plain linear layer's: `weight` is W + (alpha / r) · B A, merged when the state
is read, so a checkpoint of an adapted model loads as the plain model (`folio lm train --lora-rank R` writes
such checkpoints). Loading a plain state into an adapted layer sets W and keeps the adapter (resuming a run:
the merged weights with the adapter's current A and B would count the update twice, so a resumed run starts
its adapters again from B = 0 on top of the merged weights). `merge_lora` folds the adapters in for good.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import ConfigError

# The linear layers of a Transformer block that LoRA adapts by default: attention and feed-forward projections.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "gate", "up", "down", "fc1", "fc2")


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` (`base`) with a trained low-rank update (`lora_a` (r, in), `lora_b` (out, r))."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if rank < 1:
            raise ConfigError(f"the LoRA rank must be at least 1, got {rank}")
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.rank, self.scale = rank, alpha / rank
        weight = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=weight.device, dtype=weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear's own weights (and the paper's code)
        self.dropout = nn.Dropout(dropout)
        self.register_state_dict_post_hook(_merged_state)
        self.register_load_state_dict_pre_hook(_plain_state)

    @property
    def weight(self) -> Tensor:
        """The effective weight W + (alpha / r) · B A (out, in)."""
        return self.base.weight + self.scale * (self.lora_b @ self.lora_a)

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def forward(self, x: Tensor) -> Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b)  # (…, r) inside
        return self.base(x) + self.scale * update

    def merged(self) -> nn.Linear:
        """A plain linear layer with the update folded into its weight."""
        linear = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                           device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.weight)
            if self.base.bias is not None:
                linear.bias.copy_(self.base.bias)
        return linear


def _merged_state(module: LoRALinear, state: dict, prefix: str, _metadata) -> None:
    """The state dict of a plain linear layer: `weight` merged, no `base.`, no adapter."""
    with torch.no_grad():
        state[f"{prefix}weight"] = module.weight.detach()
    if module.base.bias is not None:
        state[f"{prefix}bias"] = state.pop(f"{prefix}base.bias")
    for name in ("base.weight", "lora_a", "lora_b"):
        state.pop(f"{prefix}{name}", None)


def _plain_state(module: LoRALinear, state: dict, prefix: str, *_args) -> None:
    """A plain linear layer's state (`weight`, `bias`) loaded into the base layer; the adapter restarts from
    B = 0 on top of it (the weight holds any earlier update already)."""
    if f"{prefix}weight" in state:
        state[f"{prefix}base.weight"] = state.pop(f"{prefix}weight")
        if f"{prefix}bias" in state:
            state[f"{prefix}base.bias"] = state.pop(f"{prefix}bias")
        state.setdefault(f"{prefix}lora_a", module.lora_a.detach().clone())
        state.setdefault(f"{prefix}lora_b", torch.zeros_like(module.lora_b))


def add_lora(model: nn.Module, rank: int, alpha: float = 16.0, dropout: float = 0.0,
             targets: Iterable[str] = DEFAULT_TARGETS) -> nn.Module:
    """Freeze every parameter of `model` and put a `LoRALinear` in place of each linear layer named in
    `targets` (the last part of its name). Returns `model`, whose trainable parameters are the adapters'."""
    targets = set(targets)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    adapted = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name in targets and type(child) is nn.Linear:
                setattr(module, name, LoRALinear(child, rank, alpha, dropout))
                adapted += 1
    if not adapted:
        raise ConfigError(f"no linear layer named {', '.join(sorted(targets))} to adapt with LoRA")
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter of `model` into its layer's weight: the plain model again. Returns `model`."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    return model


__all__ = ["DEFAULT_TARGETS", "LoRALinear", "add_lora", "merge_lora"]
