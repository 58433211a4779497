"""`folio lm` end to end through the real console script, and every bad input the issue lists."""

import json
import subprocess

import pytest


def run(cmd, *args, timeout=300):
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.helpers import PATTERN, folio_command

    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus.txt"
    corpus.write_text(PATTERN * 200)
    cmd = folio_command()
    result = run(cmd, "lm", "train", "--corpus", str(corpus), "--out", str(root / "model"), "--hidden", "32",
                 "--seq-len", "24", "--batch-size", "8", "--lr", "0.01", "--max-steps", "250", "--eval-every", "125",
                 "--warmup-steps", "10", "--sample-temperatures", "0.2", "1.0", "2.0", "--sample-length", "40")
    assert result.returncode == 0, result.stderr
    return cmd, corpus, root / "model", result


@pytest.mark.slow
def test_train_shows_progress_and_prints_three_samples(trained):
    _, _, model, result = trained
    assert "step 250/250" in result.stderr and "tok/s" in result.stderr and "ETA" in result.stderr
    for t in ("0.2", "1.0", "2.0"):
        assert f"sample at temperature {t}" in result.stdout
    assert {p.name for p in model.iterdir()} >= {"config.json", "model.safetensors", "vocab.json", "last", "metrics.jsonl"}
    assert (model / "last" / "trainer_state.pt").exists()


@pytest.mark.slow
def test_sample_is_seeded_and_streams(trained):
    cmd, _, model, _ = trained
    args = ["lm", "sample", "--model", str(model), "--prompt", "ROMEO:\nHow are", "--length", "60", "--seed", "7"]
    first, second = run(cmd, *args), run(cmd, *args)
    assert first.returncode == 0 and first.stdout == second.stdout
    assert first.stdout.startswith("ROMEO:\nHow are")
    streamed = run(cmd, *args, "--stream", "--top-k", "5", "--top-p", "0.9")
    assert streamed.returncode == 0 and streamed.stdout.startswith("ROMEO:\nHow are")
    many = run(cmd, *args, "--num-samples", "3")
    assert many.stdout.count("---") == 3


@pytest.mark.slow
def test_stop_string_ends_the_sample(trained):
    cmd, _, model, _ = trained
    result = run(cmd, "lm", "sample", "--model", str(model), "--prompt", "JULIET:\n", "--length", "200",
                 "--seed", "1", "--temperature", "0.5", "--stop", "\n\n")
    assert result.returncode == 0
    assert "\n\n" not in result.stdout.rstrip("\n")


@pytest.mark.slow
def test_evaluate_prints_one_json_object(trained):
    cmd, corpus, model, _ = trained
    result = run(cmd, "lm", "evaluate", "--model", str(model), "--corpus", str(corpus), "--split", "test", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"loss", "bits_per_token", "bits_per_char", "perplexity", "tokens"} <= report.keys()
    assert report["loss"] < 0.5 and report["tokens"] > 100
    assert abs(report["bits_per_token"] - report["loss"] / 0.6931471805599453) < 1e-9
    assert report["bits_per_char"] == report["bits_per_token"]  # the old key, kept for one release


def _assert_clean_error(result, needle):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert needle in result.stderr, result.stderr
    assert len(lines) <= 3, result.stderr


@pytest.mark.slow
def test_bad_inputs_get_one_line_errors(trained, tmp_path):
    cmd, corpus, model, _ = trained
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _assert_clean_error(run(cmd, "lm", "train", "--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")), "does not exist")
    _assert_clean_error(run(cmd, "lm", "train", "--corpus", str(empty), "--out", str(tmp_path / "o")), "is empty")
    _assert_clean_error(run(cmd, "lm", "sample", "--model", str(model), "--prompt", "Zebra§"), "not in the vocabulary")
    _assert_clean_error(run(cmd, "lm", "sample", "--model", str(model), "--temperature", "0"), "positive number")
    _assert_clean_error(run(cmd, "lm", "sample", "--model", str(model), "--temperature", "-1"), "positive number")
    _assert_clean_error(run(cmd, "lm", "sample", "--model", str(model), "--temperature", "hot"), "not a number")
    _assert_clean_error(run(cmd, "lm", "train", "--corpus", str(corpus), "--out", str(tmp_path / "none"), "--resume"), "no checkpoint to resume")
    _assert_clean_error(run(cmd, "lm", "train", "--corpus", str(corpus), "--resume", str(tmp_path / "nowhere")), "no checkpoint to resume")


@pytest.mark.slow
def test_wrong_or_corrupt_checkpoints_are_refused(trained, tmp_path):
    cmd, _, model, _ = trained
    import shutil

    other = tmp_path / "other"
    shutil.copytree(model, other, ignore=shutil.ignore_patterns("last"))
    config = json.loads((other / "config.json").read_text())
    config["task"] = "classify"
    (other / "config.json").write_text(json.dumps(config))
    _assert_clean_error(run(cmd, "lm", "sample", "--model", str(other)), "'classify' model, not a 'lm' model")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(model, corrupt, ignore=shutil.ignore_patterns("last"))
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 100)
    _assert_clean_error(run(cmd, "lm", "sample", "--model", str(corrupt)), "corrupt")
    (corrupt / "config.json").write_text("{not json")
    _assert_clean_error(run(cmd, "lm", "sample", "--model", str(corrupt)), "corrupt")
    _assert_clean_error(run(cmd, "lm", "sample", "--model", str(tmp_path)), "not a Folio checkpoint")
    bad_state = tmp_path / "bad_state"
    shutil.copytree(model / "last", bad_state)
    (bad_state / "trainer_state.pt").write_bytes(b"garbage")
    _assert_clean_error(run(cmd, "lm", "train", "--corpus", str(tmp_path / "x"), "--resume", str(bad_state)), "")


def test_help_shows_defaults(folio_cmd):
    result = run(folio_cmd, "lm", "train", "--help")
    assert result.returncode == 0 and "(default: shakespeare)" in " ".join(result.stdout.split())  # help wraps lines
