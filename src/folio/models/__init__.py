"""Model families, one file each. Every model exposes `loss(batch, ...)` for the shared trainer.

    rnn_lm.py               the recurrent language model (GRU/LSTM)
    gpt.py                  the decoder-only Transformer language model (GPT)
    llama.py                the Llama-family decoder (SmolLM2): RMSNorm, SwiGLU, grouped-query attention, rotary
    llama_weights.py        pretrained Llama weights from GGUF files and Hugging Face directories
    gguf.py                 GGUF files read lazily, tensor by tensor, and their blocks dequantized
    bert.py                 the BERT encoder (Hugging Face / MiniLM checkpoints) and its masked-LM pretraining
    classifier.py           sequence classifiers: recurrent, and a Transformer (BERT or GPT trunk) with a pooled head
    seq2seq.py              the recurrent encoder–decoder with attention
    transformer_seq2seq.py  the encoder–decoder Transformer
    captioner.py            image captioning (CNN or EfficientNet grid + attention GRU decoder)
    sentence_encoder.py     a frozen BERT (MiniLM) as a sentence encoder, and the small head trained on it

    registry.py             the one registry and loader: `model.arch` → config and module; build_model,
                            load_checkpoint (and the checks of a checkpoint directory's files)

The language models (`folio lm`) share one contract, so no caller asks which family a model is:
`kind` says what it predicts ("causal": the next token, and it generates; "masked": masked tokens, BERT;
"bidirectional": both directions, ELMo's biLM); a causal model's `forward(ids, state=None, last_only=False)`
returns (logits, state), `merge_states`/`select_state` batch its states (and a Transformer's `read_prompts` reads
several prompts in one pass, as they would merge), `reserve(state, positions)` makes a state's room for a text of
that many positions at once (a Transformer's cache; a recurrent state as it is), `rewind(state, length)` cuts a
Transformer's cache back (None for a recurrent state), `stateful` says whether its state can be carried from one
training window to the next (`--stateful`: a recurrent model), and `attention_weights(ids)` gives a Transformer's
attention (None for a recurrent model).

The helpers below are what several families share: their config checks (so every config names a bad
field, as the flag that sets it, and its value the same way), BERT/GPT-2 initialisation, and mean pooling
over real tokens.
"""

from __future__ import annotations

from torch import Tensor, nn

from folio.errors import ConfigError


def _flag(field: str) -> str:
    """A config field as the flag that sets it (`label_smoothing` → `--label-smoothing`): what a CLI user
    typed and, dashes for underscores, the field a Python caller set."""
    return "--" + field.replace("_", "-")


def check_sizes(config, *names: str) -> None:
    """Each named field of `config` is at least 1 (a vocabulary, a width, a number of layers)."""
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(f"{_flag(name)} must be at least 1, got {getattr(config, name)}")


def check_fractions(config, *names: str) -> None:
    """Each named field of `config` (a dropout, a smoothing) is in [0, 1); None means "unset" and passes."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not 0 <= value < 1:
            raise ConfigError(f"{_flag(name)} must be in [0, 1), got {value}")


def check_heads(hidden: int, heads: int) -> None:
    """Multi-head attention splits the width into whole heads; said in the flags' names, before any layer is built."""
    if hidden % heads:
        raise ConfigError(f"--hidden {hidden} must be divisible by --heads {heads}")


def check_shape(config, arch: str) -> None:
    """The checks every `folio lm` Transformer config (GPTConfig, MaskedLMConfig) shares: its arch, positive
    sizes, whole heads, dropout."""
    if config.arch != arch:
        raise ConfigError(f"{type(config).__name__} arch must be {arch!r}, got {config.arch!r}")
    check_sizes(config, "vocab_size", "layers", "heads", "hidden", "context", "ff_mult")
    check_heads(config.hidden, config.heads)
    check_fractions(config, "dropout")


def normal_init(module: nn.Module) -> None:
    """GPT-2 / BERT initialisation: weights N(0, 0.02²), biases zero (LayerNorm keeps its ones and zeros).

        model.apply(normal_init)
    """
    if isinstance(module, (nn.Linear, nn.Embedding)) and not module.weight.is_meta:
        # (a meta weight, a loader's placeholder, has no values to draw; drawing them imports torch._dynamo: 95 MB)
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """The mean of hidden states (B, T, C) over real tokens (mask (B, T), True = real) → (B, C).

    A row without a real token gives zeros, not NaN.
    """
    keep = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1e-9)


__all__ = ["check_fractions", "check_heads", "check_shape", "check_sizes", "mean_pool", "normal_init"]
