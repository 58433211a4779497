"""What a task's export hook (`graphs(directory, fmt)` in its `export.py`) builds: `Graph`s, which the export
host (`folio.export`) traces, checks against PyTorch and writes. Tasks import this module, never the host, which
imports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class Graph:
    """One graph to export: the wrapper module, a maker of example inputs (batch, length), names, dynamic axes."""

    name: str  # the file stem: model, encoder, decoder_step
    wrapper: nn.Module
    example: Callable[[int, int], tuple[Tensor, ...]]
    inputs: list[str]
    outputs: list[str]
    axes: dict
