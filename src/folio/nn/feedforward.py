"""The feed-forward layers of a Transformer block: two linear layers around GELU or ReLU (`FeedForward`), and
Llama's gated `SwiGLU`."""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import ConfigError
from folio.nn import kernels
from folio.nn.fused import fused_linear, fused_path


class FeedForward(nn.Module):
    def __init__(self, dim: int, ff_dim: int, dropout: float = 0.0, activation: str = "gelu", bias: bool = True):
        super().__init__()
        if activation not in ("gelu", "relu"):
            raise ConfigError(f"activation {activation!r}: choose gelu, relu or swiglu")
        self.fc1 = nn.Linear(dim, ff_dim, bias=bias)
        self.fc2 = nn.Linear(ff_dim, dim, bias=bias)
        self.activation = F.gelu if activation == "gelu" else F.relu
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(x))))


class SwiGLU(nn.Module):
    """The gated feed-forward layer of Llama (Shazeer 2020, "GLU variants"): down(silu(gate(x)) ⊙ up(x))."""

    def __init__(self, dim: int, ff_dim: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.gate = nn.Linear(dim, ff_dim, bias=bias)
        self.up = nn.Linear(dim, ff_dim, bias=bias)
        self.down = nn.Linear(ff_dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.gate_up_weight: Tensor | None = None  # set by fuse(): (2 ff_dim, dim)
        self.gate_up_bias: Tensor | None = None
        self.gate_up = None  # set by fuse(): x → the gate and up projections end to end

    def fuse(self) -> None:
        """One matrix product for the gate and up projections (see `fuse_projections`)."""
        if self.gate_up is None:
            self.gate_up = fused_linear(self, ("gate", "up"))
            if isinstance(self.gate_up, partial):
                self.gate_up_weight, self.gate_up_bias = self.gate_up.keywords["weight"], self.gate_up.keywords["bias"]

    def forward(self, x: Tensor) -> Tensor:
        if fused_path(self.gate_up, self.gate):
            gate_up = self.gate_up(x)  # (B, T, 2 ff_dim): the gate, then up
            if gate_up.is_contiguous() and gate_up.size(-1) % 16 == 0 and \
                    (library := kernels.for_inputs(gate_up)) is not None:  # Folio's kernel: one pass, not a split and two ops
                out = gate_up.new_empty(*gate_up.shape[:-1], gate_up.size(-1) // 2)
                library.folio_swiglu(gate_up.data_ptr(), gate_up.numel() // gate_up.size(-1), out.size(-1), out.data_ptr())
                return self.down(self.dropout(out))
            gate, up = gate_up.chunk(2, dim=-1)  # (B, T, ff_dim) each
            return self.down(self.dropout(F.silu(gate) * up))
        return self.down(self.dropout(F.silu(self.gate(x)) * self.up(x)))  # (B, T, ff_dim) inside
