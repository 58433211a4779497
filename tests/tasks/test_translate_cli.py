"""`folio translate` end to end through a real subprocess, and every bad input the issue lists."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import number_pairs


def _translate_cmd() -> list[str]:
    """The installed console script `folio translate`."""
    exe = Path(sys.executable).with_name("folio")
    return [str(exe), "translate"] if exe.exists() else [sys.executable, "-m", "folio.cli", "translate"]


def run(cmd, *args, input=None, timeout=300):
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, input=input)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("translate")
    pairs = root / "numbers.txt"
    pairs.write_text(number_pairs(3000, 0), encoding="utf-8")
    cmd = _translate_cmd()
    result = run(cmd, "train", "--data", str(pairs), "--out", str(root / "model"), "--tokenizer", "word",
                 "--hidden", "48", "--embedding-dim", "24", "--attention", "bahdanau", "--batch-size", "32",
                 "--lr", "0.01", "--max-steps", "250", "--eval-every", "125", "--warmup-steps", "10", "--dropout", "0")
    assert result.returncode == 0, result.stderr
    return cmd, pairs, root / "model", result


@pytest.mark.slow
def test_train_writes_a_checkpoint(trained):
    _, _, model, result = trained
    assert "step 250/250" in result.stderr and "bahdanau" in result.stderr
    names = {p.name for p in model.iterdir()}
    assert names >= {"config.json", "model.safetensors", "src_tokenizer.json", "tgt_tokenizer.json", "last", "metrics.jsonl"}
    assert json.loads((model / "config.json").read_text())["task"] == "translate"


@pytest.mark.slow
def test_evaluate_json_is_one_object_with_sacrebleu_signature(trained, tmp_path):
    cmd, _, model, _ = trained
    result = run(cmd, "evaluate", "--model", str(model), "--json", "--by-length", str(tmp_path / "len.png"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert {"bleu", "chrf", "exact_match", "n", "signature"} <= report.keys()
    assert "nrefs:1" in report["signature"] and "version:" in report["signature"]
    assert report["n"] > 50 and report["exact_match"] >= 0.9 and report["bleu"] > 80
    assert (tmp_path / "len.png").stat().st_size > 1000
    beam = json.loads(run(cmd, "evaluate", "--model", str(model), "--json", "--beam-size", "4").stdout)
    assert beam["exact_match"] >= 0.9
    table = run(cmd, "evaluate", "--model", str(model), "--split", "valid", "--limit", "40")
    assert table.returncode == 0 and "BLEU" in table.stdout and "source words" in table.stdout
    assert "signature: nrefs:1" in table.stdout


@pytest.mark.slow
def test_run_from_arguments_stdin_and_file_with_attention_and_n_best(trained, tmp_path):
    cmd, _, model, _ = trained
    result = run(cmd, "run", "--model", str(model), "three one four", "two", "--show-attention", str(tmp_path / "a.png"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["trois un quatre", "deux"]
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "a-2.png").exists()
    piped = run(cmd, "run", "--model", str(model), "--batch-size", "2", input="five\nsix seven\nnine nine\n")
    assert piped.returncode == 0 and piped.stdout.splitlines() == ["cinq", "six sept", "neuf neuf"]
    source = tmp_path / "in.txt"
    source.write_text("one two\nten\n")
    from_file = run(cmd, "run", "--model", str(model), "--input", str(source), "--beam-size", "3", "--n-best", "2")
    assert from_file.returncode == 0, from_file.stderr
    blocks = [b.splitlines() for b in from_file.stdout.strip().split("\n\n")]
    assert len(blocks) == 2 and all(len(b) == 2 for b in blocks)
    assert blocks[0][0].split("\t")[1] == "un deux"
    assert float(blocks[0][0].split("\t")[0]) >= float(blocks[0][1].split("\t")[0])


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(trained, tmp_path):
    cmd, pairs, model, _ = trained
    work = tmp_path / "model"
    shutil.copytree(model, work)
    result = run(cmd, "train", "--data", str(pairs), "--out", str(work), "--tokenizer", "word", "--max-steps", "260",
                 "--eval-every", "125", "--resume")
    assert result.returncode == 0, result.stderr
    assert "resuming at step 250" in result.stderr and "step 260/260" in result.stderr


@pytest.mark.slow
def test_python_api_returns_attention_weights(trained):
    from folio.tasks.translate import Translator

    _, _, model, _ = trained
    tr = Translator.from_pretrained(model)
    out = tr.translate(["eight two"], beam_size=2, return_attention=True)[0]
    assert out.text == "huit deux"
    assert out.attention.shape == (3, 3)  # (2 words + EOS) × (2 words + EOS)
    assert abs(float(out.attention.sum(-1).mean()) - 1) < 1e-5


def _assert_clean_error(result, needle):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert needle in result.stderr, result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 3, result.stderr


@pytest.mark.slow
def test_bad_inputs_get_clear_errors(trained, tmp_path):
    cmd, _, model, _ = trained
    _assert_clean_error(run(cmd, "run", "--model", str(model), "one", ""), "argument 2 is empty")
    _assert_clean_error(run(cmd, "run", "--model", str(model), input="one\n\ntwo\n"), "line 2 of standard input is empty")
    bad = tmp_path / "bad.txt"
    bad.write_text("one\tun\ntwo deux\n")
    _assert_clean_error(run(cmd, "train", "--data", str(bad), "--out", str(tmp_path / "o"), "--max-steps", "1"),
                        "line 2: expected 'source<TAB>target'")
    long = " ".join(["one"] * 40)
    _assert_clean_error(run(cmd, "run", "--model", str(model), long), "accepts at most 5")
    truncated = run(cmd, "run", "--model", str(model), long, "--truncate")
    assert truncated.returncode == 0 and "truncated from 40 to 5 tokens" in truncated.stderr
    other = tmp_path / "other"
    shutil.copytree(model, other, ignore=shutil.ignore_patterns("last"))
    config = json.loads((other / "config.json").read_text())
    config["task"] = "lm"
    (other / "config.json").write_text(json.dumps(config))
    _assert_clean_error(run(cmd, "run", "--model", str(other), "one"), "'lm' model, not a 'translate' model")
    _assert_clean_error(run(cmd, "run", "--model", str(model), "one", "--beam-size", "2", "--n-best", "3"), "--n-best 3 needs --beam-size")
    _assert_clean_error(run(cmd, "train", "--data", "https://example.org/fra-eng.zip", "--out", str(tmp_path / "o")), "--sha256")


@pytest.mark.slow
def test_transformer_arch_trains_translates_and_shows_attention(tmp_path):
    pairs = tmp_path / "numbers.txt"
    pairs.write_text(number_pairs(3000, 0), encoding="utf-8")
    cmd = _translate_cmd()
    result = run(cmd, "train", "--data", str(pairs), "--out", str(tmp_path / "model"), "--tokenizer", "word",
                 "--arch", "transformer", "--layers", "1", "--hidden", "64", "--heads", "2", "--batch-size", "32",
                 "--lr", "0.003", "--max-steps", "300", "--eval-every", "150", "--warmup-steps", "30",
                 "--schedule", "inverse_sqrt", "--dropout", "0", "--label-smoothing", "0")
    assert result.returncode == 0, result.stderr
    assert "Transformer 1+1 blocks, width 64, 2 heads" in result.stderr
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model"]["arch"] == "transformer_seq2seq" and config["train"]["schedule"] == "inverse_sqrt"
    out = run(cmd, "run", "--model", str(tmp_path / "model"), "--beam-size", "3", "three one four",
              "--show-attention", str(tmp_path / "att.png"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "trois un quatre"
    assert (tmp_path / "att.png").stat().st_size > 1000
