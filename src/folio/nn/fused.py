"""Linear layers joined end to end, so that one matrix product does the work of several (for inference: see
`folio.nn.transformer.fuse_projections`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def fuse_linears(owner: nn.Module, names: tuple[str, ...]) -> tuple[Tensor, Tensor | None]:
    """One weight (sum of the outputs, inputs) and bias holding the weights and biases of `owner`'s linear
    layers `names` end to end, so that one matrix product does the work of several (for inference: see
    `fuse_projections`).

    Each layer's parameters become views of the fused tensors (their `.data`): memory is not doubled, and
    loading or training the layers keeps the fused copy current. A state-dict hook hands out copies of the views,
    so a checkpoint of a fused model is written as usual (safetensors refuses tensors that share memory).
    """
    linears = [getattr(owner, name) for name in names]
    weight = torch.cat([linear.weight.detach() for linear in linears])  # (Σ out, in)
    bias = None if linears[0].bias is None else torch.cat([linear.bias.detach() for linear in linears])
    start = 0
    for linear in linears:
        rows = linear.weight.size(0)
        linear.weight.data = weight[start : start + rows]
        if bias is not None:
            linear.bias.data = bias[start : start + rows]
        start += rows

    def copy_views(module, state, prefix, _metadata):
        for name in names:
            for kind in ("weight", "bias"):
                key = f"{prefix}{name}.{kind}"
                if key in state:
                    state[key] = state[key].clone()

    owner.register_state_dict_post_hook(copy_views)
    return weight, bias


def fused_linear(owner: nn.Module, names: tuple[str, ...]) -> Callable[[Tensor], Tensor] | None:
    """x → the outputs of `owner`'s linear layers `names` end to end, in one product: `F.linear` on the weights
    `fuse_linears` joins, or for quantized layers (`folio.nn.quant`) one quantized layer of them all (None where
    they cannot be joined: the layers then run one by one)."""
    from folio.nn.quant import QuantizedLinear

    layers = [getattr(owner, name) for name in names]
    if all(isinstance(layer, QuantizedLinear) for layer in layers):
        return QuantizedLinear.cat(layers)
    if not all(isinstance(layer, nn.Linear) for layer in layers):
        return None
    weight, bias = fuse_linears(owner, names)
    return partial(F.linear, weight=weight, bias=bias)


def fused_path(fused: Callable | None, layer: nn.Module) -> bool:
    """Whether a layer runs its fused product: it has one and no gradient is wanted for its parameters (a
    quantized layer has none)."""
    weight = getattr(layer, "weight", None)
    return fused is not None and not (weight is not None and weight.requires_grad and torch.is_grad_enabled())
