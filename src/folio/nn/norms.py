"""RMSNorm, the normalisation of Llama's blocks (LayerNorm is PyTorch's own `nn.LayerNorm`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

_FUSED_RMS_NORM = hasattr(F, "rms_norm")  # PyTorch >= 2.4


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich 2019; Llama): x / rms(x) · weight, with no centring
    and no bias. Computed in float32 whatever the input's dtype, then cast back, as Llama's reference does."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if _FUSED_RMS_NORM and x.dtype == torch.float32 == self.weight.dtype:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # one kernel, the same bits
        wide = x.float()
        return self.weight * (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
