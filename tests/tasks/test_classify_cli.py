"""`folio classify` end to end as a real subprocess, and every bad input the issue lists."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import synthetic_reviews

FOLIO = Path(sys.executable).with_name("folio")


def folio(*args, stdin=None, timeout=300):
    cmd = [str(FOLIO)] if FOLIO.exists() else [sys.executable, "-m", "folio.cli"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, input=stdin, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify_cli")
    data = root / "reviews.csv"
    lines = ["text,label"] + [f'"{t}",{y}' for t, y in synthetic_reviews(600, 1)]
    data.write_text("\n".join(lines) + "\n")
    result = folio("classify", "train", "--data", data, "--out", root / "model", "--vocab-size", 50, "--oov-buckets", 8,
                   "--hidden", 16, "--embedding-dim", 16, "--dropout", 0, "--batch-size", 16, "--lr", 0.01,
                   "--max-steps", 150, "--eval-every", 75, "--warmup-steps", 10, "--log-every", 50)
    assert result.returncode == 0, result.stderr
    return root, data, root / "model", result


@pytest.mark.slow
def test_train_reports_validation_and_saves_a_complete_checkpoint(trained):
    _, _, model, result = trained
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["valid"]["accuracy"] > 0.9 and "step 150/150" in result.stderr
    assert {p.name for p in model.iterdir()} >= {"config.json", "model.safetensors", "vocab.json", "last"}
    assert json.loads((model / "config.json").read_text())["task"] == "classify"


@pytest.mark.slow
def test_predict_from_arguments_stdin_and_files(trained):
    root, data, model, _ = trained
    args = ["classify", "predict", "--model", model]
    result = folio(*args, "A superb and moving film", "Boring, dull and weak")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["pos", "neg"]
    assert all(0.5 < float(line.split("\t")[1]) <= 1 for line in lines)
    piped = folio(*args, "--json", stdin="A superb and moving film\n\nBoring, dull and weak\n")
    records = [json.loads(line) for line in piped.stdout.splitlines()]
    assert [r["label"] for r in records] == ["pos", "neg"] and set(records[0]["probabilities"]) == {"neg", "pos"}
    from_file = folio(*args, "--file", data, "--batch-size", 7, "--json")
    assert from_file.returncode == 0 and len(from_file.stdout.splitlines()) == 600


@pytest.mark.slow
def test_evaluate_prints_one_json_object(trained):
    root, data, model, _ = trained
    result = folio("classify", "evaluate", "--model", model, "--data", data, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix", "n", "data", "split"}
    assert report["split"] == "test" and report["n"] == 60  # the 10% training held out
    assert report["accuracy"] > 0.9 and report["roc_auc"] > 0.9


@pytest.mark.slow
def test_explain_in_the_terminal_and_as_html(trained, tmp_path):
    _, _, model, _ = trained
    text = "the acting was superb"
    coloured = folio("classify", "explain", "--model", model, text, "--color", "always")
    assert coloured.returncode == 0 and "\033[48;5;" in coloured.stdout and coloured.stdout.startswith("pos")
    page = tmp_path / "explain.html"
    assert folio("classify", "explain", "--model", model, text, "--html", page).returncode == 0
    assert "superb</span>" in page.read_text()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"text\nsome review\n", "field 'label' is missing"),
        ("text,label\ncaf\xe9,pos\nb,neg\n".encode("latin-1"), "is not UTF-8 (line 2"),
        (b"text,label\na,pos\nb,neg\nc,meh\n", "label 'meh' is not one of the 2 labels"),
    ],
)
def test_bad_training_files_write_nothing(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    out = tmp_path / "out"
    result = folio("classify", "train", "--data", path, "--out", out, "--labels", "neg,pos", "--max-steps", 1)
    assert result.returncode != 0 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.slow
def test_bad_inputs_to_a_trained_model(trained, tmp_path):
    _, _, model, _ = trained
    empty = folio("classify", "predict", "--model", model, "")
    assert empty.returncode != 0 and "input 1 is empty" in empty.stderr
    three = tmp_path / "three.jsonl"
    three.write_text('{"text": "great", "label": "pos"}\n{"text": "meh", "label": "mixed"}\n')
    result = folio("classify", "evaluate", "--model", model, "--data", three, "--json")
    assert result.returncode != 0 and "line 2: label 'mixed' is not one of the 2 labels" in result.stderr
    other = tmp_path / "lm"
    other.mkdir()
    (other / "config.json").write_text('{"task": "lm"}')
    wrong = folio("classify", "predict", "--model", other, "hello")
    assert wrong.returncode != 0 and "not a 'classify' model" in wrong.stderr
    page = tmp_path / "nothing.html"
    failed = folio("classify", "explain", "--model", model, "!!!", "--html", page)
    assert failed.returncode != 0 and not page.exists()
