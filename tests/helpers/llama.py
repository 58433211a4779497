"""A tiny random Llama written as llama.cpp would write it (a GGUF file with its byte-level BPE tokenizer and a
chat template), for tests of the pretrained-model paths that must not need the real SmolLM2 or `transformers`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["h e", "l l", "Ġ t", "Ġt he", "o u", "Ġ a"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokens(merges: list[str] = MERGES) -> list[str]:
    from tokenizers.pre_tokenizers import ByteLevel

    return SPECIALS + sorted(ByteLevel.alphabet()) + [m.replace(" ", "") for m in merges]


def _readable(token: str) -> bool:
    """Whether a byte-level token is ASCII text (Ġ: a space), not a byte of a longer UTF-8 character."""
    text = token.replace("Ġ", " ")
    return text.isascii() and text.isprintable()


def tiny_llama(seed: int = 0, tied: bool = True, layers: int = 2, ff_hidden: int = 48):
    """A random Llama over `tiny_tokens()` (grouped-query attention, 4 heads, 2 key/value heads), its weights
    large enough that the logits are far from uniform, and its output rows of non-ASCII bytes small, so that it
    writes (random) ASCII text rather than broken UTF-8."""
    from folio.models.llama import Llama, LlamaConfig

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tiny_tokens()), layers=layers, heads=4, kv_heads=2, hidden=32, ff_hidden=ff_hidden,
                         context=64, rope_base=5000.0, tied=tied)
    model = Llama(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(1 + 0.1 * torch.randn_like(param) if "norm" in name else 0.3 * torch.randn_like(param))
        unreadable = torch.tensor([not _readable(token) for token in tiny_tokens()])
        model.head.weight[unreadable] *= 0.05
    return model


def _llama_cpp_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """What llama.cpp's converter does to query and key rows (the inverse of `unpermute_rotary`)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(path: str | Path, model, chat_template: str | None = CHAT_TEMPLATE, types: dict | None = None) -> Path:
    """`model` (a Folio Llama over `tiny_tokens()`) as a GGUF file with its tokenizer, each tensor in
    `types.get(GGUF name, F32)` (Q4_0, Q4_1, Q8_0...: rows of a multiple of 32 values)."""
    from folio.models.llama_weights import _foreign_name

    c = model.config
    tensors = {_foreign_name(name, gguf=True): tensor for name, tensor in model.state_dict().items()
               if not (name == "head.weight" and c.tied)}
    hyper = {"context_length": c.context, "embedding_length": c.hidden, "block_count": c.layers,
             "feed_forward_length": c.ff_hidden, "head_count": c.heads, "head_count_kv": c.kv_heads,
             "rope_freq_base": c.rope_base, "layer_norm_rms_eps": c.norm_eps, "vocab_size": c.vocab_size}
    return write_gguf_file(path, hyper, tensors, chat_template=chat_template, types=types)


def write_gguf_file(path: str | Path, hyper: dict, tensors: dict, arch: str = "llama", tokenizer: bool = True,
                    merges: list[str] = MERGES, chat_template: str | None = CHAT_TEMPLATE, types: dict | None = None,
                    extra: dict[str, np.ndarray] | None = None) -> Path:
    """A GGUF file as llama.cpp writes one: `hyper` (GGUFWriter's `add_NAME` → value), with a byte-level BPE
    tokenizer over `tiny_tokens(merges)`, and `tensors` (GGUF name → weight) with query and key rows permuted,
    each in `types.get(name, F32)`; `extra` tensors are written as they are."""
    import gguf

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), arch)
    for name, value in hyper.items():
        getattr(writer, f"add_{name}")(value)
    if tokenizer:
        tokens = tiny_tokens(merges)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("smollm")
        writer.add_token_list(tokens)
        writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
        writer.add_token_merges(merges)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        if chat_template:
            writer.add_chat_template(chat_template)
    for name, tensor in tensors.items():
        weight = tensor.float().numpy() if isinstance(tensor, torch.Tensor) else tensor
        if ".attn_q." in name:
            weight = _llama_cpp_rows(weight, hyper["head_count"])
        elif ".attn_k." in name:
            weight = _llama_cpp_rows(weight, hyper["head_count_kv"])
        qtype = (types or {}).get(name, gguf.GGMLQuantizationType.F32)
        writer.add_tensor(name, gguf.quants.quantize(np.ascontiguousarray(weight), qtype), raw_dtype=qtype)
    for name, array in (extra or {}).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
