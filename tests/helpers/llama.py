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


def tiny_tokens() -> list[str]:
    from tokenizers.pre_tokenizers import ByteLevel

    return SPECIALS + sorted(ByteLevel.alphabet()) + [m.replace(" ", "") for m in MERGES]


def _readable(token: str) -> bool:
    """Whether a byte-level token is ASCII text (Ġ: a space), not a byte of a longer UTF-8 character."""
    text = token.replace("Ġ", " ")
    return text.isascii() and text.isprintable()


def tiny_llama(seed: int = 0, tied: bool = True, layers: int = 2):
    """A random Llama over `tiny_tokens()` (grouped-query attention, 4 heads, 2 key/value heads), its weights
    large enough that the logits are far from uniform, and its output rows of non-ASCII bytes small, so that it
    writes (random) ASCII text rather than broken UTF-8."""
    from folio.models.llama import Llama, LlamaConfig

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tiny_tokens()), layers=layers, heads=4, kv_heads=2, hidden=32, ff_hidden=48,
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


def write_gguf(path: str | Path, model, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    """`model` (a Folio Llama over `tiny_tokens()`) as a float32 GGUF file with its tokenizer."""
    import gguf

    from folio.models.llama_weights import _foreign_name

    path, c = Path(path), model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(c.context)
    writer.add_embedding_length(c.hidden)
    writer.add_block_count(c.layers)
    writer.add_feed_forward_length(c.ff_hidden)
    writer.add_head_count(c.heads)
    writer.add_head_count_kv(c.kv_heads)
    writer.add_rope_freq_base(c.rope_base)
    writer.add_layer_norm_rms_eps(c.norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tiny_tokens())
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tiny_tokens()) - len(SPECIALS)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if chat_template:
        writer.add_chat_template(chat_template)
    for name, tensor in model.state_dict().items():
        if name == "head.weight" and c.tied:
            continue
        theirs, weight = _foreign_name(name, gguf=True), tensor.float().numpy()
        if ".attn_q." in theirs:
            weight = _llama_cpp_rows(weight, c.heads)
        elif ".attn_k." in theirs:
            weight = _llama_cpp_rows(weight, c.kv_heads)
        writer.add_tensor(theirs, np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
