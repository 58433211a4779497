"""RMSNorm, the normalisation of Llama's blocks (LayerNorm is PyTorch's own `nn.LayerNorm`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.nn import kernels

_FUSED_RMS_NORM = hasattr(F, "rms_norm")  # PyTorch >= 2.4


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich 2019; Llama): x / rms(x) · weight, with no centring
    and no bias. Computed in float32 whatever the input's dtype, then cast back, as Llama's reference does."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.size(-1) % 8 == 0 and (library := kernels.for_inputs(x, self.weight)) is not None:
            # Folio's kernel (`decode_step.c`): PyTorch's CPU rms_norm is six operations, ~15-35 µs for one row,
            # ~2 % of a decoding step of a 30-layer model over its 61 norms
            if not x.is_contiguous():
                x = x.contiguous()
            y = torch.empty_like(x)
            library.folio_rms_norm(x.data_ptr(), x.numel() // x.size(-1), x.size(-1), self.weight.data_ptr(), self.eps,
                                   y.data_ptr(), kernels.threads())
            return y
        if _FUSED_RMS_NORM and x.dtype == torch.float32 == self.weight.dtype:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # one kernel, the same bits
        wide = x.float()
        return self.weight * (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
