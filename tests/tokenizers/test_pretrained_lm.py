"""A pretrained LM's byte-level BPE from GGUF metadata: the model's own ids, special tokens matched whole, digits
split one by one (SmolLM2's `smollm` splitting), the chat template, saving, and bad metadata."""

import json

import pytest

from folio.errors import CheckpointError, ConfigError
from folio.tokenizers.pretrained_lm import PretrainedLMTokenizer

pytest.importorskip("tokenizers")


def _metadata(**changes) -> dict:
    from tokenizers.pre_tokenizers import ByteLevel

    merges = ["h e", "l l", "Ġ t", "Ġt he", "1 2"]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"] + sorted(ByteLevel.alphabet())
    tokens += [m.replace(" ", "") for m in merges]
    data = {
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3, 3, 3, 4] + [1] * (len(tokens) - 4), "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                                   "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    }
    return {k: v for k, v in {**data, **changes}.items() if v is not None}


def test_ids_are_the_models_own_and_text_round_trips():
    tok = PretrainedLMTokenizer.from_gguf_metadata(_metadata(), "tiny.gguf")
    assert tok.kind == "pretrained_lm" and len(tok) == 4 + 256 + 5
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (None, 1, 2, 0)  # no padding: id 0 is <|endoftext|>
    text = "the hello\n  Ünïcödé 🎬\ttabs"
    assert tok.decode(tok.encode(text)) == text
    assert tok.tokenize(" the")[0] == ["Ġthe"]
    ids = tok.encode("<|im_start|>user<|im_end|><tool>")
    assert ids[0] == 1 and ids[-2:] == [2, 3]  # special and added tokens are matched whole
    assert tok.decode(ids) == "user<tool>"  # specials read as nothing, added tokens stay
    assert tok.encode("12") == [tok.token_to_id("1"), tok.token_to_id("2")]  # digits one by one, despite "1 2"


def test_plain_gpt2_splitting_keeps_numbers_together():
    tok = PretrainedLMTokenizer.from_gguf_metadata(_metadata(**{"tokenizer.ggml.pre": "gpt2"}), "tiny.gguf")
    assert tok.encode("12") == [tok.token_to_id("12")]


def test_chat_template_and_saving(tmp_path):
    tok = PretrainedLMTokenizer.from_gguf_metadata(_metadata(), "tiny.gguf")
    chat = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(chat) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.apply_chat_template(chat, add_generation_prompt=False) == "<|im_start|>user\nhi<|im_end|>\n"
    tok.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "vocab.json").read_text())
    assert saved["type"] == "pretrained_lm" and (tmp_path / "tokenizer.json").is_file()
    again = PretrainedLMTokenizer.from_dict({**saved, "tokenizer": (tmp_path / "tokenizer.json").read_text()})
    assert again.encode("the <|im_end|>12") == tok.encode("the <|im_end|>12") and again.eos_id == 2
    assert again.apply_chat_template(chat) == tok.apply_chat_template(chat)
    bare = PretrainedLMTokenizer.from_gguf_metadata(_metadata(**{"tokenizer.chat_template": None}), "tiny.gguf")
    with pytest.raises(ConfigError, match="no chat template"):
        bare.apply_chat_template(chat)


@pytest.mark.parametrize("changes, message", [
    ({"tokenizer.ggml.tokens": None}, "no tokenizer"),
    ({"tokenizer.ggml.model": "llama"}, "tokenizer.ggml.model is 'llama'"),
    ({"tokenizer.ggml.merges": None}, "no merges"),
    ({"tokenizer.ggml.pre": "qwen2"}, "tokenizer.ggml.pre 'qwen2'"),
    ({"tokenizer.ggml.token_type": [1, 1]}, "malformed"),
])
def test_bad_metadata_names_the_file_and_the_field(changes, message):
    with pytest.raises(CheckpointError, match=message) as caught:
        PretrainedLMTokenizer.from_gguf_metadata(_metadata(**changes), "models/tiny.gguf")
    assert str(caught.value).startswith("models/tiny.gguf: ") and "\n" not in str(caught.value)
